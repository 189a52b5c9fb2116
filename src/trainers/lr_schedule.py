"""Learning-rate schedule shared by the diffusion modules: linear warm-up, then constant or decaying.

The papers train at a constant rate after warm-up (Animate Anyone 1e-5, DynamiCrafter 1e-5), which is the
default. A decay to `min_ratio` of the base rate over the stage's optimizer steps is the usual choice for
short fine-tunes, where the last steps at a constant rate leave the weights noisy (on the CPU demo it scored
within the run-to-run spread of a constant rate: see the README).
"""

from __future__ import annotations

import math
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


def check_schedule(decay: str, min_ratio: float) -> None:
    if decay not in DECAYS:
        raise ValueError(f"model.lr_decay={decay!r} is not one of {DECAYS}.")
    if not 0.0 <= min_ratio <= 1.0:
        raise ValueError(f"model.min_lr_ratio must be in [0, 1], got {min_ratio}.")


def build_lr_scheduler(
    optimizer: torch.optim.Optimizer,
    warmup_steps: int,
    decay: str,
    total_steps: int | float,
    min_ratio: float,
) -> dict | None:
    """Lightning's per-step scheduler config, or None when the rate is constant from the first step.

    `total_steps` is the trainer's estimated optimizer steps (max_steps after gradient accumulation); a
    decaying schedule needs it finite."""
    check_schedule(decay, min_ratio)
    if warmup_steps <= 0 and decay == "constant":
        return None
    if decay != "constant" and not math.isfinite(total_steps):
        raise ValueError(
            f"model.lr_decay={decay!r} needs a known number of steps: set trainer.max_steps for the stage."
        )
    steps = int(total_steps) if math.isfinite(total_steps) else 0  # unused by a constant rate
    factor = partial(lr_multiplier, warmup_steps=warmup_steps, decay=decay, total_steps=steps, min_ratio=min_ratio)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    return {"scheduler": scheduler, "interval": "step"}
