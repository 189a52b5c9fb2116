"""Strict loading of pretrained weights from local files.

Nothing is downloaded: every file comes from a path in config. A missing file, a missing key or an
unexpected key is an error that says which file, which keys and which config key to change, because a
silently half-loaded model (a non-strict load) is the most common cause of bad results in the reference
implementations (e.g. flickering videos when motion-module weights were not found).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import nn

__all__ = [
    "WeightLoadError",
    "require_file",
    "load_state_dict_file",
    "load_strict",
    "load_diffusers_model",
    "find_weights_file",
]

_SHOWN_KEYS = 20
_DIFFUSERS_WEIGHT_NAMES = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")
M = TypeVar("M", bound=nn.Module)


class WeightLoadError(RuntimeError):
    """A weights file is missing, unreadable, or does not match the module it is loaded into."""


class MissingWeightFileError(FileNotFoundError):
    """A pretrained file named in config is absent; the message says which key to set and where to get it."""


def require_file(path: str | Path | None, config_key: str, published_at: str) -> Path:
    """Return `path` (a file or a folder) if it exists, else raise naming it, the config key and where to get it."""
    if path is None or str(path) == "":
        raise MissingWeightFileError(
            f"No path is set for `{config_key}`. Set `{config_key}` to a local copy (e.g. `{config_key}=/path/to/file` "
            f"on the command line); such a file is published at {published_at}. Nothing is downloaded at run time."
        )
    resolved = Path(path).expanduser()
    if not resolved.exists():
        raise MissingWeightFileError(
            f"Pretrained file not found: {resolved}. Set the config key `{config_key}` to a local copy of it "
            f"(e.g. `{config_key}=/path/to/file` on the command line); such a file is published at "
            f"{published_at}. Nothing is downloaded at run time."
        )
    return resolved


def load_state_dict_file(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a state dict from .safetensors, or from a torch pickle (.bin/.pt/.pth/.ckpt), unwrapping a "state_dict" key."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Weights file not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return dict(load_file(str(path), device="cpu"))
    try:
        obj: Any = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # pickles with custom classes, TorchScript archives, corrupt files
        raise WeightLoadError(
            f"Could not read {path} as a torch state dict ({type(err).__name__}: {err}). Expected a "
            ".safetensors file or a torch.save'd dict of tensors (optionally under a 'state_dict' key)."
        ) from err
    if isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping):
        raise WeightLoadError(f"{path} holds a {type(obj).__name__}, expected a dict of tensors.")
    tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if len(tensors) != len(obj):
        others = sorted(k for k, v in obj.items() if not isinstance(v, torch.Tensor))
        raise WeightLoadError(f"{path}: entries that are not tensors: {_first(others)}")
    return dict(tensors)


def _first(keys: list[str]) -> str:
    shown = ", ".join(keys[:_SHOWN_KEYS])
    more = f", ... ({len(keys)} in total)" if len(keys) > _SHOWN_KEYS else f" ({len(keys)} in total)"
    return shown + more


def load_strict(
    module: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str, hint: str | None = None,
    assign: bool = False,
) -> None:
    """Load `state_dict` into `module`, requiring exactly the same keys and shapes; raise WeightLoadError otherwise.

    The error names the source file, the missing and unexpected keys (first 20 and the totals) and every
    shape mismatch, so a wrong or partial checkpoint is caught at load time instead of after training.
    """
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    mismatched = sorted(
        f"{k}: file {tuple(state_dict[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in set(expected) & set(state_dict)
        if tuple(state_dict[k].shape) != tuple(expected[k].shape)
    )
    if missing or unexpected or mismatched:
        lines = [f"Weights in {source} do not match {type(module).__name__}:"]
        if missing:
            lines.append(f"  missing keys: {_first(missing)}")
        if unexpected:
            lines.append(f"  unexpected keys: {_first(unexpected)}")
        if mismatched:
            lines.append(f"  shape mismatches: {_first(mismatched)}")
        lines.append("  " + (hint or "Check that the file belongs to this model and that the model config matches it."))
        raise WeightLoadError("\n".join(lines))
    module.load_state_dict(dict(state_dict), strict=True, assign=assign)


def find_weights_file(folder: Path, names: tuple[str, ...] = _DIFFUSERS_WEIGHT_NAMES) -> Path | None:
    """First existing file of `names` inside `folder` (safetensors preferred), or None."""
    for name in names:
        if (folder / name).is_file():
            return folder / name
    return None


def load_diffusers_model(cls: type[M], folder: str | Path, config_key: str, published_at: str) -> M:
    """Build `cls` from `folder/config.json` and strictly load the weights file next to it.

    Replaces diffusers' `from_pretrained`, which initialises missing weights randomly with only a warning.
    """
    folder = require_file(folder, config_key, published_at)
    config_path = require_file(folder / "config.json", config_key, published_at)
    weights = find_weights_file(folder)
    if weights is None:
        raise FileNotFoundError(
            f"No weights file in {folder}: expected one of {', '.join(_DIFFUSERS_WEIGHT_NAMES)}.\n"
            f"  Set the config key `{config_key}` to a diffusers model folder; such folders are published at: "
            f"{published_at}"
        )
    with open(config_path) as f:
        config = json.load(f)
    model = cls.from_config(config)
    state_dict = load_state_dict_file(weights)
    fix_legacy_names = getattr(model, "_fix_state_dict_keys_on_load", None)
    if fix_legacy_names is not None:
        # diffusers' own renaming of pre-0.14 attention names (query/key/value/proj_attn -> to_q/...):
        # old VAE folders still use them. It renames only; strictness below is unchanged.
        state_dict = fix_legacy_names(dict(state_dict))
    load_strict(model, state_dict, source=str(weights))
    return model
