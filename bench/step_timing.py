"""One way to time a training step for both sides of an official-vs-ours bench (parent and child processes), and
one check of the official checkout a user points the bench at.

Imports only torch, so a child that puts an official checkout's packages on sys.path can use it too.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from pathlib import Path

import torch


def time_step(step: Callable[[], None], device: torch.device, steps: int, warmup: int = 2) -> dict:
    """Mean ms per step after `warmup` steps, and the process's peak CUDA memory (None on CPU)."""
    for _ in range(warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    ms = (time.perf_counter() - start) / steps * 1e3
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    return {"ms": ms, "peak_gib": peak}


def autocast(device: torch.device, bf16: bool):
    return torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()


def check_checkout(path: str | Path | None, flag: str, name: str, url: str, files: tuple[str, ...]) -> Path:
    """The checkout's root, or a ValueError naming the flag, what is missing and how to get it."""
    if not path:
        raise ValueError(f"{flag} is required: clone {url} and pass the clone's root directory.")
    root = Path(path).expanduser().resolve()
    if not root.is_dir():
        raise ValueError(f"{flag} {path} is not a directory: clone {url} and pass the clone's root.")
    missing = [f for f in files if not (root / f).is_file()]
    if missing:
        raise ValueError(
            f"{flag} {root} is not a {name} checkout (missing {', '.join(missing)}): "
            f"pass the root of a clone of {url}."
        )
    return root
