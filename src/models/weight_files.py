"""Tensor names and shapes of a weights file, read without loading the weights.

The weights doctor (`python -m src.check`) compares these with what the configured model expects, in
seconds even for multi-GB files: a .safetensors file is read from its JSON header only; a torch zip pickle
(.ckpt/.pt/.pth/.bin) is opened with `mmap=True`, which maps the storage instead of reading it.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

Shapes = dict[str, tuple[int, ...]]


def read_shapes(path: str | Path) -> Shapes:
    """{tensor name: shape} of a .safetensors or torch-saved state dict (Lightning `state_dict` / DeepSpeed
    `module` wrappers unwrapped); raises ValueError naming the file when it is not readable as either."""
    path = Path(path)
    if path.suffix == ".safetensors":
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) != 8:
                raise ValueError(f"{path}: too short to be a safetensors file ({path.stat().st_size} bytes)")
            (length,) = struct.unpack("<Q", head)
            if length > path.stat().st_size:
                raise ValueError(f"{path}: safetensors header length {length} exceeds the file size (truncated?)")
            header = json.loads(f.read(length))
        return {k: tuple(v["shape"]) for k, v in header.items() if k != "__metadata__"}
    try:
        obj: Any = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as err:  # not a zip pickle, truncated, custom classes
        raise ValueError(f"{path}: not readable as a torch state dict ({type(err).__name__}: {err})") from err
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        obj = obj["state_dict"]
    elif isinstance(obj, Mapping) and isinstance(obj.get("module"), Mapping):
        obj = {k.removeprefix("_forward_module."): v for k, v in obj["module"].items()}
    if not isinstance(obj, Mapping):
        raise ValueError(f"{path}: holds a {type(obj).__name__}, expected a dict of tensors")
    return {str(k): tuple(v.shape) for k, v in obj.items() if isinstance(v, torch.Tensor)}


def module_shapes(module: torch.nn.Module) -> Shapes:
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


@dataclass
class ShapeComparison:
    """How a file's tensors compare with a model's state dict."""

    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def summary(self, shown: int = 3) -> str:
        parts = []
        for name, keys in (("missing", self.missing), ("unexpected", self.unexpected),
                           ("shape mismatch", self.mismatched)):
            if keys:
                more = f", ... ({len(keys)})" if len(keys) > shown else ""
                parts.append(f"{name}: {', '.join(keys[:shown])}{more}")
        return "; ".join(parts)


def compare_shapes(expected: Shapes, found: Shapes) -> ShapeComparison:
    return ShapeComparison(
        missing=sorted(set(expected) - set(found)),
        unexpected=sorted(set(found) - set(expected)),
        mismatched=sorted(f"{k} file {list(found[k])} vs model {list(expected[k])}"
                          for k in set(expected) & set(found) if tuple(found[k]) != tuple(expected[k])),
    )
