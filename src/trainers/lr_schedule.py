"""Learning-rate schedule shared by the diffusion modules: linear warm-up, then constant or decaying.

The papers train at a constant rate after warm-up (Animate Anyone 1e-5, DynamiCrafter 1e-5), which is the
default. A decay to `min_ratio` of the base rate over the stage's optimizer steps is the usual choice for
short fine-tunes, where the last steps at a constant rate leave the weights noisy (on the CPU demo it scored
within the run-to-run spread of a constant rate: see the README).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import torch

DECAYS = ("constant", "cosine", "linear")


def lr_multiplier(step: int, warmup_steps: int, decay: str, total_steps: int, min_ratio: float) -> float:
    """Factor on the base learning rate at optimizer step `step` (0-based)."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    if decay == "constant":
        return 1.0
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    shape = 0.5 * (1.0 + math.cos(math.pi * progress)) if decay == "cosine" else 1.0 - progress
    return min_ratio + (1.0 - min_ratio) * shape


@dataclass(frozen=True)
class LRSchedule:
    """The modules' `warmup_steps`, `lr_decay` and `min_lr_ratio`, checked when the module is built."""

    warmup_steps: int = 0
    decay: str = "constant"
    min_ratio: float = 0.0

    def __post_init__(self) -> None:
        if self.decay not in DECAYS:
            raise ValueError(f"model.lr_decay={self.decay!r} is not one of {DECAYS}.")
        if not 0.0 <= self.min_ratio <= 1.0:
            raise ValueError(f"model.min_lr_ratio must be in [0, 1], got {self.min_ratio}.")


def build_lr_scheduler(
    optimizer: torch.optim.Optimizer, schedule: LRSchedule, total_steps: Callable[[], float]
) -> dict | None:
    """Lightning's per-step scheduler config, or None when the rate is constant from the first step.

    `total_steps` gives the trainer's estimated optimizer steps (max_steps after gradient accumulation); it is
    called only for a decaying schedule, so a constant one needs no trainer (tests build modules bare)."""
    if schedule.warmup_steps <= 0 and schedule.decay == "constant":
        return None
    steps = 0  # unused by a constant rate
    if schedule.decay != "constant":
        total = total_steps()
        if not math.isfinite(total):
            raise ValueError(
                f"model.lr_decay={schedule.decay!r} needs a known number of steps: set trainer.max_steps for the "
                "stage."
            )
        steps = int(total)
    factor = partial(
        lr_multiplier,
        warmup_steps=schedule.warmup_steps,
        decay=schedule.decay,
        total_steps=steps,
        min_ratio=schedule.min_ratio,
    )
    return {"scheduler": torch.optim.lr_scheduler.LambdaLR(optimizer, factor), "interval": "step"}
