"""VideoSSIM and VideoPSNR: per-frame image metrics averaged over all frames of all videos.

`update(preds, target)` takes two videos `(B, T, C, H, W)` of equal shape, uint8 in [0, 255] or float in
[0, 1] (video_input.py); the data range is therefore fixed and explicit (1.0 on the [0, 1] scale), never
inferred per batch. Two protocols:

- "standard": SSIM with an 11x11 Gaussian window (σ 1.5, K1 0.01, K2 0.03) on RGB, averaged over channels
  (torchmetrics); PSNR over all channels with peak 1.
- "disco": the DisCo/TikTok script the Animate Anyone comparison tables used: frames quantised to uint8
  (as saved PNGs), SSIM on OpenCV-BGR2GRAY grayscale with skimage's defaults (7x7 uniform window, sample
  covariance, data range 255, borders excluded); PSNR on the uint8 values with MAX 255. The corrected
  float PSNR ("PSNR*"), not the original uint8-overflow bug.
Both protocols give PSNR = 100 dB for identical frames (as DisCo and common_metrics_on_video_quality).
"""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics.functional.image import structural_similarity_index_measure

from src.eval.feature_stats import MergeableMetric
from src.eval.video_input import check_same_shape, video_to_unit_float

Protocol = Literal["standard", "disco"]
PSNR_CAP_DB = 100.0


def _check_protocol(protocol: str) -> None:
    if protocol not in ("standard", "disco"):
        raise ValueError(f"protocol must be 'standard' or 'disco', got {protocol!r}")


def quantize_to_uint8_levels(frames: Tensor) -> Tensor:
    """[0, 1] floats -> float64 values in {0..255}, as writing frames to 8-bit image files does."""
    return (frames.to(torch.float64) * 255.0).round()


def opencv_bgr2gray(frames_255: Tensor) -> Tensor:
    """OpenCV's BGR2GRAY on RGB uint8 levels `(N, 3, H, W)`: fixed-point 0.299R + 0.587G + 0.114B."""
    r, g, b = (frames_255[:, i].to(torch.int64) for i in range(3))
    return ((r * 4899 + g * 9617 + b * 1868 + (1 << 13)) >> 14).to(torch.float64)


def skimage_default_ssim(gray_a: Tensor, gray_b: Tensor, data_range: float = 255.0) -> Tensor:
    """Per-image SSIM of `(N, H, W)` grayscale as skimage's structural_similarity defaults compute it.

    7x7 uniform window, sample covariance (÷48), mean over pixels whose window lies inside the image
    (skimage pads, then crops 3 pixels per side, so the padding never enters the mean).
    """
    win = 7
    if min(gray_a.shape[-2:]) < win:
        raise ValueError(
            f"SSIM (disco protocol) needs frames of at least {win}x{win}, got {tuple(gray_a.shape[-2:])}"
        )
    a, b = gray_a[:, None].to(torch.float64), gray_b[:, None].to(torch.float64)

    def mean_filter(x: Tensor) -> Tensor:
        return F.avg_pool2d(x, win, stride=1)

    cov_norm = win * win / (win * win - 1)
    ux, uy = mean_filter(a), mean_filter(b)
    vx = cov_norm * (mean_filter(a * a) - ux * ux)
    vy = cov_norm * (mean_filter(b * b) - uy * uy)
    vxy = cov_norm * (mean_filter(a * b) - ux * uy)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    ssim_map = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    return ssim_map.mean(dim=(1, 2, 3))


class _PerFrameMean(MergeableMetric):
    """Sum of per-frame values and frame count (float64), so means merge exactly across shards."""

    is_differentiable = False

    def __init__(self, protocol: Protocol = "standard", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        _check_protocol(protocol)
        self.protocol = protocol
        self.add_mergeable_state("value_sum", torch.zeros((), dtype=torch.float64), "sum")
        self.add_mergeable_state("frame_count", torch.zeros((), dtype=torch.float64), "sum")

    def partial_signature(self) -> dict[str, Any]:
        return {**super().partial_signature(), "protocol": self.protocol}

    def per_frame(self, preds: Tensor, target: Tensor) -> Tensor:
        """`(N, 3, H, W)` frames in [0, 1] -> `(N,)` values."""
        raise NotImplementedError

    def update(self, preds: Tensor, target: Tensor) -> None:
        """Add generated videos `preds` and their references `target`, both `(B, T, C, H, W)`."""
        preds_f = video_to_unit_float(preds, "preds", torch.float64)
        target_f = video_to_unit_float(target, "target", torch.float64)
        check_same_shape(preds_f, target_f, "preds", "target")
        values = self.per_frame(preds_f.flatten(0, 1), target_f.flatten(0, 1))
        self.value_sum = self.value_sum + values.to(torch.float64).sum()
        self.frame_count = self.frame_count + values.numel()

    def compute(self) -> Tensor:
        if self.frame_count == 0:
            raise RuntimeError(f"{type(self).__name__} has no frames; call update(preds, target) first")
        return self.value_sum / self.frame_count


class VideoSSIM(_PerFrameMean):
    """Mean SSIM over all frames; see the module docstring for the "standard" and "disco" protocols."""

    higher_is_better = True

    def per_frame(self, preds: Tensor, target: Tensor) -> Tensor:
        if self.protocol == "disco":
            gray_p = opencv_bgr2gray(quantize_to_uint8_levels(preds))
            gray_t = opencv_bgr2gray(quantize_to_uint8_levels(target))
            return skimage_default_ssim(gray_p, gray_t, data_range=255.0)
        return structural_similarity_index_measure(
            preds.to(torch.float64), target.to(torch.float64), data_range=1.0, reduction="none"
        )


class VideoPSNR(_PerFrameMean):
    """Mean per-frame PSNR in dB (peak = full data range), capped at 100 dB for identical frames."""

    higher_is_better = True

    def per_frame(self, preds: Tensor, target: Tensor) -> Tensor:
        if self.protocol == "disco":
            preds, target = quantize_to_uint8_levels(preds) / 255.0, quantize_to_uint8_levels(target) / 255.0
        mse = (preds.to(torch.float64) - target.to(torch.float64)).pow(2).mean(dim=(1, 2, 3))
        psnr = 10.0 * torch.log10(1.0 / mse.clamp_min(1e-300))
        return torch.where(mse == 0, torch.full_like(psnr, PSNR_CAP_DB), psnr)
