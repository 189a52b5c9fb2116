"""OmegaConf helpers: the resolvers used by conf/ (registered once, on import by the entry points) and the
conversion of config containers to plain Python for libraries that check `isinstance(x, dict)`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf


def auto_precision() -> str:
    """bf16-mixed on a CUDA GPU that supports it, full fp32 elsewhere (CPU runs, tests)."""
    if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return "bf16-mixed"
    return "32-true"


def register_resolvers() -> None:
    if not OmegaConf.has_resolver("auto_precision"):
        OmegaConf.register_new_resolver("auto_precision", auto_precision)


def to_plain(value: Any) -> Any:
    """OmegaConf containers (or any mapping/sequence) -> plain dicts/lists, recursively (e.g. for open_clip)."""
    if isinstance(value, Mapping):
        return {str(k): to_plain(v) for k, v in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
        return [to_plain(v) for v in value]
    return value


def stage_config(cfg: DictConfig, name: str) -> DictConfig:
    """The root config with `stages.<name>` merged over it (model, data, trainer, global batch, ...)."""
    base = OmegaConf.masked_copy(cfg, [k for k in cfg.keys() if k != "stages"])
    merged = OmegaConf.merge(base, cfg.stages[name])
    OmegaConf.set_struct(merged, False)
    return merged
