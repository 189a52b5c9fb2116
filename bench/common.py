"""Shared bits of the GPU benchmarks: the CUDA requirement, result files, side-by-side printing."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "results"


def require_cuda(script: str) -> torch.device:
    """Exit with a clear message (status 1) when there is no CUDA GPU: these numbers mean nothing on a CPU."""
    if not torch.cuda.is_available():
        sys.exit(f"{script} needs a CUDA GPU (torch.cuda.is_available() is False); run it on a GPU node.")
    return torch.device("cuda")


def gpu_name() -> str:
    return torch.cuda.get_device_name().replace(" ", "_")


def write_results(name: str, payload: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}_{gpu_name()}_{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(
        json.dumps({"gpu": torch.cuda.get_device_name(), "torch": torch.__version__, **payload}, indent=2)
    )
    return path


def table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows)
