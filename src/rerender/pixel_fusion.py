"""Pixel-aware latent fusion of Rerender's key frames (middle steps, paper Eqs. 10-11).

The pixel reference of key frame j is the first pass's result, overlaid with the previous key frame's output
warped to j where that flow is valid, then with the anchor's output warped to j where that flow is valid
(soft occlusion masks). It is encoded with E* into `target` and, inside the window, pulls the latent towards
q(x_t | target) where the reference is valid (mask M: min-pooled to latent size, i.e. a latent cell counts only
if every pixel in it is valid for the anchor or the previous key frame).

Two variants (config `pixel_fusion`):
- "official" (default): x_t <- w q(x_t | target) + (1 - w)(x_t - d) + r d, with d the previous step's noise
  direction, w = mask_strength * M and r = max(1 - w, inner_strength sqrt(1 - w^2)) (variance-aware); with
  `smooth_boundary`, r falls back to 1 - w where M is not flat (its 3x3 gradient is non-zero).
- "paper": the hard replacement x_t <- M q(x_t | target) + (1 - M) x_t.
Images `b 3 H W` in [0, 1], occlusions `b 1 H W` (1 = occluded), latents `b c 1 h w`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from src.models.sampling import SamplingHook, StepState
from src.rerender.shape_fusion import soft_occlusion
from src.rerender.step_windows import StepWindows

__all__ = ["PixelFusionHook", "flat_region", "pixel_reference", "reference_mask"]

VARIANTS = ("official", "paper")


def pixel_reference(
    direct: torch.Tensor,
    warped_previous: torch.Tensor,
    occlusion_previous: torch.Tensor,
    warped_anchor: torch.Tensor,
    occlusion_anchor: torch.Tensor,
) -> torch.Tensor:
    """Warped previous output over the first-pass result, then the warped anchor output over both."""
    soft_prev, soft_anchor = soft_occlusion(occlusion_previous), soft_occlusion(occlusion_anchor)
    blended = (1 - soft_prev) * warped_previous + soft_prev * direct
    return (1 - soft_anchor) * warped_anchor + soft_anchor * blended


def reference_mask(
    occlusion_previous: torch.Tensor, occlusion_anchor: torch.Tensor, factor: int
) -> torch.Tensor:
    """Latent mask M `b 1 h w`: valid for the anchor or the previous key frame, softened, then min-pooled."""
    occluded_in_both = occlusion_previous.float() * occlusion_anchor.float()
    valid = 1 - soft_occlusion(occluded_in_both)
    return 1 - F.max_pool2d(1 - valid, factor, stride=factor)


def flat_region(mask: torch.Tensor) -> torch.Tensor:
    """1 where the 3x3 horizontal and vertical differences of `mask` `b 1 h w` are both zero (replicate padding)."""
    kx = torch.tensor([[-1.0, 0.0, 1.0]] * 3, device=mask.device)
    kernels = torch.stack([kx, kx.t()])[:, None]
    grads = F.conv2d(F.pad(mask.float(), (1, 1, 1, 1), mode="replicate"), kernels)
    return (grads.abs().sum(dim=1, keepdim=True) == 0).float()


class PixelFusionHook(SamplingHook):
    """Pulls x_t towards the noised E* target before each step of the pixel-fusion window."""

    def __init__(
        self,
        windows: StepWindows,
        target: torch.Tensor,
        mask: torch.Tensor,
        variant: str = "official",
        mask_strength: float = 0.5,
        inner_strength: float = 0.9,
        smooth_boundary: bool = True,
        generator: torch.Generator | None = None,
    ) -> None:
        if variant not in VARIANTS:
            raise ValueError(f"pixel fusion variant must be one of {VARIANTS}, got {variant!r}")
        self.windows, self.variant, self.generator = windows, variant, generator
        self.target, self.mask = target[:, :, None].float(), mask[:, :, None].float()
        weight = mask_strength * self.mask
        rescale = torch.maximum(1 - weight, inner_strength * (1 - weight**2).sqrt())
        if smooth_boundary:
            flat = flat_region(mask)[:, :, None]
            rescale = (1 - weight) * (1 - flat) + rescale * flat
        self.weight, self.rescale = weight, rescale

    def before_step(self, state: StepState, x: torch.Tensor) -> torch.Tensor:
        if not self.windows.active("pixel_fusion", state.index, state.num_steps):
            return x
        noise = torch.randn(self.target.shape, generator=self.generator, device=x.device, dtype=torch.float32)
        reference = state.add_noise(self.target, noise)
        xf = x.float()
        if self.variant == "paper":
            return (self.mask * reference + (1 - self.mask) * xf).to(x.dtype)
        direction = torch.zeros_like(xf) if state.direction is None else state.direction.float()
        fused = self.weight * reference + (1 - self.weight) * (xf - direction) + self.rescale * direction
        return fused.to(x.dtype)
