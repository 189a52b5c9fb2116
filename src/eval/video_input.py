"""Validation and conversion of the videos and images that enter the metrics.

Layout, once for all of src/eval: videos enter a metric's `update()` as `(B, T, C, H, W)` and images
as `(B, C, H, W)`, with C = 3 (RGB), either uint8 in [0, 255] or floating point in [0, 1]. Wrong rank,
dtype or range is an error that says what was found and what is expected. Internally the metrics work on
float32 in [0, 1].
"""

from __future__ import annotations

import torch
from torch import Tensor

_RANGE_TOLERANCE = 1e-4


def _check_channels(x: Tensor, channel_dim: int, name: str, layout: str) -> None:
    if x.shape[channel_dim] != 3:
        raise ValueError(
            f"{name} must be RGB with 3 channels in layout {layout}, got shape {tuple(x.shape)} "
            f"({x.shape[channel_dim]} channels at dim {channel_dim}). Permute e.g. `t h w c` frames to "
            f"`t c h w` before passing them."
        )


def _to_unit_float(x: Tensor, name: str, dtype: torch.dtype) -> Tensor:
    """uint8 -> /255; float -> checked to lie in [0, 1]; anything else is an error."""
    if x.dtype == torch.uint8:
        return x.to(dtype) / 255.0
    if not torch.is_floating_point(x):
        raise TypeError(
            f"{name} must be uint8 in [0, 255] or floating point in [0, 1], got dtype {x.dtype}. "
            f"Convert with `.to(torch.uint8)` or `.float() / 255`."
        )
    if x.numel() > 0:
        lo, hi = torch.aminmax(x.detach())
        lo, hi = float(lo), float(hi)
        if lo < -_RANGE_TOLERANCE or hi > 1.0 + _RANGE_TOLERANCE or lo != lo or hi != hi:
            raise ValueError(
                f"{name} is floating point, so it must lie in [0, 1], but its values span [{lo:.4g}, {hi:.4g}]. "
                f"Map [-1, 1] outputs with `(x + 1) / 2`, or pass uint8 frames in [0, 255]."
            )
    return x.to(dtype).clamp(0.0, 1.0)


def video_to_unit_float(videos: Tensor, name: str = "videos", dtype: torch.dtype = torch.float32) -> Tensor:
    """Validate a `(B, T, C, H, W)` video batch and return it as `dtype` (float32) in [0, 1]."""
    if not isinstance(videos, Tensor):
        raise TypeError(
            f"{name} must be a torch.Tensor of shape (B, T, C, H, W), got {type(videos).__name__}."
        )
    if videos.ndim != 5:
        raise ValueError(
            f"{name} must have shape (B, T, C, H, W) (5 dims), got {videos.ndim} dims {tuple(videos.shape)}. "
            f"A single video needs a batch dim: `video[None]`."
        )
    _check_channels(videos, 2, name, "(B, T, C, H, W)")
    return _to_unit_float(videos, name, dtype)


def image_to_unit_float(images: Tensor, name: str = "images", dtype: torch.dtype = torch.float32) -> Tensor:
    """Validate a `(B, C, H, W)` image batch and return it as `dtype` (float32) in [0, 1]."""
    if not isinstance(images, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (B, C, H, W), got {type(images).__name__}.")
    if images.ndim != 4:
        raise ValueError(
            f"{name} must have shape (B, C, H, W) (4 dims), got {images.ndim} dims {tuple(images.shape)}. "
            f"A single image needs a batch dim: `image[None]`."
        )
    _check_channels(images, 1, name, "(B, C, H, W)")
    return _to_unit_float(images, name, dtype)


def check_same_shape(a: Tensor, b: Tensor, name_a: str, name_b: str) -> None:
    """Paired metrics (SSIM, PSNR, LPIPS) compare frame to frame: shapes must match exactly."""
    if a.shape != b.shape:
        raise ValueError(
            f"{name_a} {tuple(a.shape)} and {name_b} {tuple(b.shape)} must have the same shape. Resize the "
            f"generated frames to the reference size first (the DisCo protocol resizes to the ground truth)."
        )
