"""Shared random I3D weights and videos for the FVD-flavour reference tests (tests/data/fvd_flavours/).

The same functions made the weights and videos that the reference codebases were run on, so a test
rebuilds them from seeds instead of storing 50 MB of weights. Every value comes from a seeded
torch.Generator on CPU, which is stable across PyTorch versions.
"""

from __future__ import annotations

from pathlib import Path

import torch

from src.eval.i3d import InceptionI3d

REFERENCE_DIR = Path(__file__).resolve().parents[1] / "data" / "fvd_flavours"
VIDEO_SHAPE = (4, 10, 3, 36, 48)  # (B, T, C, H, W): the shortest clip I3D takes, non-square frames


def shared_random_i3d_state(seed: int = 0) -> dict[str, torch.Tensor]:
    """InceptionI3d state dict: He-scaled conv weights, non-trivial BatchNorm statistics, gamma = 1 (TF has none)."""
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for name, value in InceptionI3d().state_dict().items():
        if name.endswith("num_batches_tracked"):
            continue
        if name.endswith("conv3d.weight"):
            fan_in = value[0].numel()
            state[name] = torch.randn(value.shape, generator=gen) * (2.0 / fan_in) ** 0.5
        elif name.endswith("bn.weight"):
            state[name] = torch.ones(value.shape)
        elif name.endswith("running_mean") or name.endswith("bias"):
            state[name] = torch.randn(value.shape, generator=gen) * 0.1
        elif name.endswith("running_var"):
            state[name] = torch.rand(value.shape, generator=gen) + 0.5
        else:
            raise KeyError(f"no rule for I3D state entry {name}")
    return state


def shared_random_videos(seed: int = 1) -> torch.Tensor:
    """`(B, T, C, H, W)` float videos in [0, 1], smooth enough that the resize rules matter, never on a uint8 step."""
    gen = torch.Generator().manual_seed(seed)
    b, t, c, h, w = VIDEO_SHAPE
    coarse = torch.rand(b * t, c, h // 6, w // 6, generator=gen)
    smooth = torch.nn.functional.interpolate(coarse, size=(h, w), mode="bicubic", align_corners=False)
    noise = torch.rand(b * t, c, h, w, generator=gen) * 0.1
    return (smooth * 0.85 + noise).clamp(0.0, 1.0).reshape(b, t, c, h, w)


def shared_random_features(seed: int, n: int, dim: int = 400, shift: float = 0.0) -> torch.Tensor:
    """`(n, dim)` float64 feature sets with a correlated covariance, for the FVD/KVD formula references."""
    gen = torch.Generator().manual_seed(seed)
    mixing = torch.randn(dim, dim, generator=gen, dtype=torch.float64) / dim**0.5
    return torch.randn(n, dim, generator=gen, dtype=torch.float64) @ mixing * 3.0 + shift
