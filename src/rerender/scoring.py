"""Scores of a propagated video against its stylised ground truth: PSNR and SSIM through the project's pixel
metrics, and temporal consistency as the flow-warp error (Pixel-MSE) over visible pixels, with the flows of
the ground-truth video so every method is warped by the same motion. Videos `t 3 h w` float in [0, 1]."""

from __future__ import annotations

from torch import Tensor

from src.eval.flow_metrics import masked_warp_mse
from src.eval.pixel_metrics import VideoPSNR, VideoSSIM
from src.rerender.flow import PairFlows

__all__ = ["score_video", "temporal_warp_error"]


def temporal_warp_error(video: Tensor, pairs: PairFlows) -> float:
    """Mean over consecutive pairs of the MSE between frame t and frame t+1 warped onto it (visible pixels)."""
    per_pair = masked_warp_mse(video[:-1].cpu(), video[1:].cpu(), pairs.forward.cpu(), pairs.backward.cpu())
    return float(per_pair[~per_pair.isnan()].mean())


def score_video(video: Tensor, truth: Tensor, truth_pairs: PairFlows, skip: list[int] | None = None) -> dict:
    """PSNR / SSIM over the frames not in `skip` (the key frames), and the temporal warp error of all frames."""
    keep = [i for i in range(video.shape[0]) if i not in set(skip or [])]
    psnr, ssim = VideoPSNR(), VideoSSIM()
    pred, ref = video[keep].cpu().clamp(0, 1)[None], truth[keep].cpu()[None]
    psnr.update(pred, ref)
    ssim.update(pred, ref)
    return {
        "psnr": float(psnr.compute()),
        "ssim": float(ssim.compute()),
        "temporal_warp_mse": temporal_warp_error(video.clamp(0, 1), truth_pairs),
    }
