"""Deterministic fake weights from key names and shapes, shared by the Moore reference script and its tests.

Each tensor is seeded by the CRC-32 of its key, so Moore's code (in a scratch environment) and our loader
see the same values without any weight file being checked in. Values are scaled so that a tiny random UNet
neither explodes nor vanishes: matrices ~ N(0, 1/fan_in), norm weights ~ 1 + N(0, 0.1^2), biases ~ N(0, 0.1^2).
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence

import torch


def fake_tensor(key: str, shape: Sequence[int], dtype: torch.dtype = torch.float64) -> torch.Tensor:
    g = torch.Generator().manual_seed(zlib.crc32(key.encode()))
    values = torch.randn(tuple(shape), generator=g, dtype=torch.float64)
    if len(shape) >= 2:
        fan_in = max(1, int(torch.Size(shape).numel() // shape[0]))
        values = values / fan_in**0.5
    elif key.endswith("weight"):
        values = 1.0 + 0.1 * values
    else:
        values = 0.1 * values
    return values.to(dtype)


def fake_state_dict(
    shapes: Mapping[str, Sequence[int]], dtype: torch.dtype = torch.float64
) -> dict[str, torch.Tensor]:
    return {key: fake_tensor(key, shape, dtype) for key, shape in shapes.items()}
