"""OmegaConf resolvers used by conf/ (registered once, on import by the entry points)."""

from __future__ import annotations

import torch
from omegaconf import OmegaConf


def auto_precision() -> str:
    """bf16-mixed on a CUDA GPU that supports it, full fp32 elsewhere (CPU runs, tests)."""
    if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return "bf16-mixed"
    return "32-true"


def register_resolvers() -> None:
    if not OmegaConf.has_resolver("auto_precision"):
        OmegaConf.register_new_resolver("auto_precision", auto_precision)
