"""Per-video scores for pose-guided animation: PSNR, SSIM and the demo's pose-following IoU.

Videos are `b c t h w` in [-1, 1] (the models' layout); scores are per video (averaged over frames),
computed in [0, 1] with an explicit data range. The IoU compares the generated character's foreground
(pixels that differ from the known background) with the true silhouette.
"""

from __future__ import annotations

import torch
from torchmetrics.functional.image import structural_similarity_index_measure


def _frames01(video: torch.Tensor) -> torch.Tensor:
    if video.ndim != 5:
        raise ValueError(f"expected a video batch (b, c, t, h, w), got shape {tuple(video.shape)}")
    return ((video.float().clamp(-1, 1) + 1) / 2).permute(0, 2, 1, 3, 4)  # b t c h w


def video_psnr(video: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """PSNR per frame with data range 1, averaged over frames -> (b,)."""
    x, y = _frames01(video), _frames01(target)
    mse = (x - y).pow(2).flatten(2).mean(dim=2).clamp(min=1e-10)
    return (10 * torch.log10(1.0 / mse)).mean(dim=1)


def video_ssim(video: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """SSIM (Gaussian 11x11, sigma 1.5, data range 1) per frame, averaged over frames -> (b,)."""
    x, y = _frames01(video), _frames01(target)
    b, t = x.shape[:2]
    scores = structural_similarity_index_measure(
        x.flatten(0, 1), y.flatten(0, 1), data_range=1.0, reduction="none"
    )
    return scores.view(b, t).mean(dim=1)


def foreground_mask(
    video: torch.Tensor, background: torch.Tensor, threshold: float = 0.12, smooth: int = 3
) -> torch.Tensor:
    """Pixels whose colour differs from the background by more than `threshold` (max over RGB, [0,1] scale),
    after averaging the difference over a `smooth` x `smooth` window so isolated grain is not foreground.

    video `b c t h w` in [-1, 1]; background `b c h w` in [-1, 1] -> mask `b t h w` bool.
    """
    x = _frames01(video)
    bg = ((background.float().clamp(-1, 1) + 1) / 2)[:, None]
    diff = (x - bg).abs().amax(dim=2)  # b t h w
    if smooth > 1:
        b, t = diff.shape[:2]
        diff = torch.nn.functional.avg_pool2d(
            diff.flatten(0, 1)[:, None], smooth, stride=1, padding=smooth // 2, count_include_pad=False
        )[:, 0].unflatten(0, (b, t))
    return diff > threshold


def silhouette_iou(pred: torch.Tensor, true: torch.Tensor) -> torch.Tensor:
    """IoU of boolean masks `b t h w`, per frame, averaged over frames -> (b,); empty-vs-empty counts as 1."""
    inter = (pred & true).flatten(2).sum(dim=2).float()
    union = (pred | true).flatten(2).sum(dim=2).float()
    iou = torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))
    return iou.mean(dim=1)


def boundary_inside_ratio(video: torch.Tensor, boundaries: list[int]) -> torch.Tensor:
    """Seam score of context-window sampling -> (b,): the mean absolute difference between consecutive frames
    across window boundaries (pairs (f-1, f) for f in `boundaries`) over the same mean inside windows (every
    other consecutive pair). About 1 when the seams are invisible; well above 1 when windows disagree."""
    x = _frames01(video)
    t = x.shape[1]
    inside = [f for f in range(1, t) if f not in set(boundaries)]
    if not boundaries or not inside:
        raise ValueError(
            f"boundary_inside_ratio needs frame pairs both at and between boundaries; got boundaries {boundaries} "
            f"in a {t}-frame video."
        )
    steps = (x[:, 1:] - x[:, :-1]).abs().flatten(2).mean(dim=2)  # b, t-1: step f-1 -> f at index f-1
    at = steps[:, [f - 1 for f in boundaries]].mean(dim=1)
    within = steps[:, [f - 1 for f in inside]].mean(dim=1)
    return at / within.clamp(min=1e-12)
