"""Per-stage weight files: the trainable container saved as safetensors, loaded back strictly.

These files are how one stage hands its result to the next (stage 2 starts from stage 1's final
weights) and what users load for sampling; Lightning checkpoints stay for resuming only.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn

from src import atomic_io
from src.models.weights import load_strict


def save_net_weights(
    net: nn.Module | Mapping[str, torch.Tensor], path: str | Path, dtype: torch.dtype | None = None, **metadata: str
) -> Path:
    """`net`'s state dict, or a given state dict (e.g. `master_state_dict(net)`), as safetensors, atomically."""
    path = Path(path)
    state = {}
    for key, value in (net.state_dict() if isinstance(net, nn.Module) else net).items():
        value = value.detach().cpu()
        if dtype is not None and value.is_floating_point():
            value = value.to(dtype)
        state[key] = value.contiguous()
    return atomic_io.save_safetensors(state, path, metadata={k: str(v) for k, v in metadata.items()})


def load_net_weights(net: nn.Module, path: str | Path) -> None:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"stage weights {path} do not exist: run the earlier stage first (stage=spatial writes "
            "<run_dir>/spatial/final/net.safetensors) or set model.init_weights to such a file."
        )
    load_strict(net, load_file(str(path)), source=str(path))
