"""One random resized crop shared by the reference, target and pose frames (Animate Anyone).

Input layout: `t h w c` uint8 numpy (on disk); output: float tensors `c t h w` (videos) and
`c h w` (reference). The crop box is drawn once per sample, so skeleton pixels stay aligned with
the character. Pixel frames are resized bilinearly with antialiasing; pose frames with area
(downscaling) or nearest (upscaling) so the skeleton palette colours survive.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["CropBox", "PairedRandomResizedCrop", "crop_resize", "sample_crop_box"]


@dataclass(frozen=True)
class CropBox:
    """A crop window in pixels of the source frame."""

    top: int
    left: int
    height: int
    width: int


def sample_crop_box(
    height: int,
    width: int,
    scale: tuple[float, float],
    ratio: tuple[float, float],
    rng: np.random.Generator,
    attempts: int = 10,
) -> CropBox:
    """Draw a crop covering a `scale` fraction of the frame with aspect (width / height) in `ratio`.

    Area fraction is uniform in `scale`, aspect log-uniform in `ratio`; after `attempts` misses it
    falls back to the largest centred crop whose aspect is clamped into `ratio`.
    """
    if not (0 < scale[0] <= scale[1] <= 1):
        raise ValueError(f"crop scale must satisfy 0 < low <= high <= 1, got {scale}")
    if not (0 < ratio[0] <= ratio[1]):
        raise ValueError(f"crop ratio must satisfy 0 < low <= high, got {ratio}")
    area = height * width
    log_low, log_high = math.log(ratio[0]), math.log(ratio[1])
    for _ in range(attempts):
        target_area = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(log_low, log_high))
        crop_w = int(round(math.sqrt(target_area * aspect)))
        crop_h = int(round(math.sqrt(target_area / aspect)))
        if 0 < crop_w <= width and 0 < crop_h <= height:
            top = int(rng.integers(0, height - crop_h + 1))
            left = int(rng.integers(0, width - crop_w + 1))
            return CropBox(top, left, crop_h, crop_w)
    aspect = min(max(width / height, ratio[0]), ratio[1])
    if width / height > aspect:
        crop_h, crop_w = height, int(round(height * aspect))
    else:
        crop_h, crop_w = int(round(width / aspect)), width
    return CropBox((height - crop_h) // 2, (width - crop_w) // 2, crop_h, crop_w)


def crop_resize(frames: np.ndarray, box: CropBox, size: tuple[int, int], *, kind: str) -> torch.Tensor:
    """Crop `box` out of (T, H, W, 3) uint8 frames and resize to `size` = (H, W).

    kind="pixels": bilinear + antialias; kind="pose": area when shrinking, nearest otherwise.
    Returns float32 (T, 3, H, W) in [0, 1].
    """
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"expected frames of shape (T, H, W, 3), got {frames.shape}")
    _, height, width, _ = frames.shape
    if box.top < 0 or box.left < 0 or box.top + box.height > height or box.left + box.width > width:
        raise ValueError(f"crop {box} does not fit in frames of size {height}x{width}")
    crop = frames[:, box.top : box.top + box.height, box.left : box.left + box.width]
    video = torch.from_numpy(np.ascontiguousarray(crop)).permute(0, 3, 1, 2).float().div_(255.0)
    if (box.height, box.width) == tuple(size):
        return video
    if kind == "pixels":
        video = F.interpolate(video, size=size, mode="bilinear", align_corners=False, antialias=True)
    elif kind == "pose":
        shrinking = size[0] <= box.height and size[1] <= box.width
        video = F.interpolate(video, size=size, mode="area" if shrinking else "nearest-exact")
    else:
        raise ValueError(f"kind must be 'pixels' or 'pose', got {kind!r}")
    return video.clamp_(0.0, 1.0)


class PairedRandomResizedCrop:
    """Apply one random resized crop to reference, targets and pose; scale to the model's ranges.

    Returns (reference (3, H, W) in [-1, 1], pixel_values (3, T, H, W) in [-1, 1],
    pose (3, T, H, W) in [0, 1]).
    """

    def __init__(
        self,
        size: tuple[int, int],
        scale: tuple[float, float] = (0.9, 1.0),
        ratio: tuple[float, float] = (0.9, 1.0),
    ) -> None:
        self.size = (int(size[0]), int(size[1]))
        self.scale = (float(scale[0]), float(scale[1]))
        self.ratio = (float(ratio[0]), float(ratio[1]))

    def __call__(
        self, reference: np.ndarray, frames: np.ndarray, pose: np.ndarray, rng: np.random.Generator
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if reference.shape != frames.shape[1:] or pose.shape != frames.shape:
            raise ValueError(
                f"reference {reference.shape}, frames {frames.shape} and pose {pose.shape} must share "
                f"(H, W, 3), and pose must have one frame per target frame"
            )
        box = sample_crop_box(frames.shape[1], frames.shape[2], self.scale, self.ratio, rng)
        pixels = crop_resize(np.concatenate([reference[None], frames]), box, self.size, kind="pixels")
        pixels = pixels.mul_(2.0).sub_(1.0)
        pose_video = crop_resize(pose, box, self.size, kind="pose")
        return (
            pixels[0],
            pixels[1:].permute(1, 0, 2, 3).contiguous(),
            pose_video.permute(1, 0, 2, 3).contiguous(),
        )
