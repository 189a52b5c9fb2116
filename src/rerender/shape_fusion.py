"""Shape-aware latent fusion of Rerender's key frames: in the early steps the predicted x0 latent takes the
anchor frame's x0 (stored at the same step) warped by the flow, wherever that flow is not occluded.

Pixel-level flow and occlusion are turned into latent ones as the official code does: the soft occlusion
is clamp(GaussianBlur(k9, sigma 18)(maxpool9(occ)) + occ, 0, 1); the latent flow is the pixel flow / factor,
bilinearly downsampled by the VAE factor; the latent mask is 1 - maxpool_factor(soft occlusion), so one
occluded pixel invalidates its whole latent cell; the warp is nearest. Layouts: latents `b c h w`, pixel
flow `b 2 H W` (x, y), occlusion `b 1 H W` in [0, 1]. Not wired to a sampler yet.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from src.rerender.flow import warp

__all__ = ["latent_flow_and_mask", "shape_aware_fusion", "soft_occlusion"]


def soft_occlusion(occlusion: Tensor) -> Tensor:
    """Grow and soften a hard occlusion mask `b 1 H W`: max-pool 9, Gaussian blur (k9, sigma 18), + itself."""
    grown = F.max_pool2d(occlusion.float(), 9, stride=1, padding=4)
    x = torch.arange(9, dtype=torch.float32, device=occlusion.device) - 4
    g = torch.exp(-(x**2) / (2 * 18.0**2))
    g = g / g.sum()
    blurred = F.conv2d(F.pad(grown, (4, 4, 0, 0), mode="reflect"), g.view(1, 1, 1, 9))
    blurred = F.conv2d(F.pad(blurred, (0, 0, 4, 4), mode="reflect"), g.view(1, 1, 9, 1))
    return (blurred + occlusion.float()).clamp(0, 1)


def latent_flow_and_mask(flow: Tensor, occlusion: Tensor, factor: int = 8) -> tuple[Tensor, Tensor]:
    """Pixel flow + hard occlusion -> latent flow `b 2 h w` and fusion mask `b 1 h w` (1 = take the anchor)."""
    h, w = flow.shape[-2] // factor, flow.shape[-1] // factor
    latent_flow = F.interpolate(flow / factor, size=(h, w), mode="bilinear", align_corners=False)
    mask = 1 - F.max_pool2d(soft_occlusion(occlusion), factor, stride=factor)
    return latent_flow, mask


def shape_aware_fusion(x0: Tensor, anchor_x0: Tensor, latent_flow: Tensor, mask: Tensor) -> Tensor:
    """x0 <- mask * warp_nearest(anchor_x0, latent_flow) + (1 - mask) * x0."""
    return mask * warp(anchor_x0, latent_flow, "nearest") + (1 - mask) * x0
