"""WarpedPixelMSE (Rerender's Pixel-MSE): flow-warped consecutive-frame MSE over non-occluded pixels.

Videos enter `update()` as `(B, T, C, H, W)`, uint8 in [0, 255] or float in [0, 1] (video_input.py); the
MSE is on the [0, 1] RGB scale. For each pair (t, t+1): RAFT forward flow t->t+1 and backward flow
t+1->t; frame t+1 is backward-warped onto frame t with the forward flow; pixels failing the forward-backward
consistency check (Sundaram et al. 2010, as in Lai et al. 2018 and Rerender's own occlusion masks) or
flowing outside the frame are excluded. Per video: the mean over its pairs (a pair with no consistent pixel is left out; a video with none is\ncounted in `skipped_videos` and warned about); the metric: the mean over videos.
RAFT is torchvision's raft_large / raft_small architecture with weights from a local checkpoint.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.optical_flow import raft_large, raft_small

from src.eval.feature_stats import MergeableMetric
from src.eval.video_input import video_to_unit_float
from src.eval.weights import require_weight_file

RaftVariant = Literal["raft_large", "raft_small"]
RAFT_PUBLISHED_AT = {
    "raft_large": "https://download.pytorch.org/models/raft_large_C_T_SKHT_V2-ff5fadd5.pth (torchvision)",
    "raft_small": "https://download.pytorch.org/models/raft_small_C_T_V2-01064c6d.pth (torchvision)",
}
FlowFn = Callable[[Tensor, Tensor], Tensor]


def load_raft(
    path: str | Path | None, variant: RaftVariant = "raft_large", config_key: str = "eval.raft_checkpoint"
) -> nn.Module:
    """torchvision RAFT (weights=None) with the local checkpoint loaded strictly."""
    if variant not in RAFT_PUBLISHED_AT:
        raise ValueError(f"RAFT variant must be 'raft_large' or 'raft_small', got {variant!r}")
    file = require_weight_file(path, config_key, RAFT_PUBLISHED_AT[variant])
    model = raft_large(weights=None) if variant == "raft_large" else raft_small(weights=None)
    state = torch.load(file, map_location="cpu", weights_only=True)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as error:
        raise ValueError(
            f"'{file}' ({config_key}) is not a torchvision {variant} checkpoint: {error}"
        ) from error
    return model.eval().requires_grad_(False)


class RaftFlow(nn.Module):
    """Flow `(N, 2, H, W)` (x, y in pixels) from frame a to frame b, both `(N, 3, H, W)` in [0, 1].

    RAFT wants inputs in [-1, 1] with sides divisible by 8 and at least 128: frames are replicate-padded
    on the bottom/right, the flow cropped back.
    """

    def __init__(self, raft: nn.Module, num_flow_updates: int = 12) -> None:
        super().__init__()
        self.raft, self.num_flow_updates = raft, num_flow_updates

    def train(self, mode: bool = True) -> RaftFlow:
        return super().train(False)

    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        h, w = a.shape[-2:]
        pad_w, pad_h = max(128, w + (-w) % 8) - w, max(128, h + (-h) % 8) - h  # RAFT needs >= 128, /8
        pad = (0, pad_w, 0, pad_h)
        a_in, b_in = (F.pad(2 * x - 1, pad, mode="replicate") for x in (a, b))
        flows = self.raft(a_in, b_in, num_flow_updates=self.num_flow_updates)
        return flows[-1][..., :h, :w]


def backward_warp(image: Tensor, flow: Tensor) -> tuple[Tensor, Tensor]:
    """Sample `image` at x + flow(x) (bilinear); returns the warped image and an in-frame mask `(N, 1, H, W)`."""
    n, _, h, w = image.shape
    ys, xs = torch.meshgrid(
        torch.arange(h, device=image.device, dtype=flow.dtype),
        torch.arange(w, device=image.device, dtype=flow.dtype),
        indexing="ij",
    )
    x_new, y_new = xs + flow[:, 0], ys + flow[:, 1]
    grid = torch.stack([2 * x_new / max(w - 1, 1) - 1, 2 * y_new / max(h - 1, 1) - 1], dim=-1)
    warped = F.grid_sample(
        image, grid.to(image.dtype), mode="bilinear", padding_mode="zeros", align_corners=True
    )
    inside = (x_new >= 0) & (x_new <= w - 1) & (y_new >= 0) & (y_new <= h - 1)
    return warped, inside[:, None]


def consistency_mask(flow_fw: Tensor, flow_bw: Tensor) -> Tensor:
    """Non-occluded pixels of frame t: |F_fw + F_bw(x + F_fw)|² < 0.01(|F_fw|² + |F_bw(x + F_fw)|²) + 0.5."""
    bw_at_target, inside = backward_warp(flow_bw, flow_fw)
    mismatch = (flow_fw + bw_at_target).pow(2).sum(dim=1, keepdim=True)
    magnitude = flow_fw.pow(2).sum(dim=1, keepdim=True) + bw_at_target.pow(2).sum(dim=1, keepdim=True)
    return (mismatch < 0.01 * magnitude + 0.5) & inside


def warped_pair_mse(frames_t: Tensor, frames_next: Tensor, flow_fn: FlowFn) -> Tensor:
    """Per pair `(N,)`: MSE between frame t and frame t+1 warped onto it, over non-occluded pixels.

    A pair without a single consistent pixel has no defined value: NaN.
    """
    return masked_warp_mse(frames_t, frames_next, flow_fn(frames_t, frames_next), flow_fn(frames_next, frames_t))


def masked_warp_mse(frames_t: Tensor, frames_next: Tensor, flow_fw: Tensor, flow_bw: Tensor) -> Tensor:
    """`warped_pair_mse` with the flows given (t -> t+1 and t+1 -> t), e.g. from another video of the same
    motion; NaN for a pair without a consistent pixel."""
    flow_fw, flow_bw = flow_fw.to(torch.float64), flow_bw.to(torch.float64)
    warped, _ = backward_warp(frames_next.to(torch.float64), flow_fw)
    mask = consistency_mask(flow_fw, flow_bw).to(torch.float64)
    squared = (frames_t.to(torch.float64) - warped).pow(2).mean(dim=1, keepdim=True)
    valid = mask.sum(dim=(1, 2, 3))
    mse = (squared * mask).sum(dim=(1, 2, 3)) / valid.clamp_min(1)
    return torch.where(valid > 0, mse, torch.full_like(mse, float("nan")))


class WarpedPixelMSE(MergeableMetric):
    """Pixel-MSE: mean over videos of the mean flow-warped consecutive-frame MSE (lower is better)."""

    is_differentiable = False
    higher_is_better = False

    def __init__(
        self,
        checkpoint: str | Path | None = None,
        variant: RaftVariant = "raft_large",
        flow_model: nn.Module | None = None,
        num_flow_updates: int = 12,
        config_key: str = "eval.raft_checkpoint",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.flow = (
            flow_model
            if flow_model is not None
            else RaftFlow(load_raft(checkpoint, variant, config_key), num_flow_updates)
        )
        self.flow.eval()
        for param in self.flow.parameters():
            param.requires_grad_(False)
        self.flow_name = variant if flow_model is None else type(flow_model).__name__
        self.add_mergeable_state("video_score_sum", torch.zeros((), dtype=torch.float64), "sum")
        self.add_mergeable_state("video_count", torch.zeros((), dtype=torch.float64), "sum")
        self.add_mergeable_state("skipped_videos", torch.zeros((), dtype=torch.float64), "sum")

    def train(self, mode: bool = True) -> WarpedPixelMSE:
        super().train(mode)
        self.flow.eval()
        return self

    def partial_signature(self) -> dict[str, Any]:
        return {**super().partial_signature(), "flow": self.flow_name}

    def update(self, videos: Tensor) -> None:
        """Add videos `(B, T, C, H, W)` with T >= 2."""
        clips = video_to_unit_float(videos)
        if clips.shape[1] < 2:
            raise ValueError(f"Pixel-MSE needs at least 2 frames per video, got shape {tuple(videos.shape)}")
        with torch.no_grad():
            for video in clips:
                pair_mse = warped_pair_mse(video[:-1], video[1:], self.flow)
                defined = pair_mse[~pair_mse.isnan()]
                if defined.numel() == 0:  # every pair fully occluded: counted in skipped_videos, reported
                    self.skipped_videos = self.skipped_videos + 1
                    continue
                self.video_score_sum = self.video_score_sum + defined.mean()
                self.video_count = self.video_count + 1

    def compute(self) -> Tensor:
        if self.video_count == 0:
            raise RuntimeError(
                f"WarpedPixelMSE has no videos with a consistent flow ({int(self.skipped_videos)} skipped); "
                f"call update(videos) first"
            )
        if self.skipped_videos > 0:
            warnings.warn(
                f"WarpedPixelMSE skipped {int(self.skipped_videos)} video(s) whose frame pairs were entirely "
                f"occluded by the forward-backward check",
                stacklevel=2,
            )
        return self.video_score_sum / self.video_count
