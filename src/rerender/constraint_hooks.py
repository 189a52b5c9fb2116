"""Rerender's key-frame constraints as hooks of the shared denoising loop (`SamplingHook`), each acting only in
its step window (`StepWindows`; index 0 = the noisiest step, official indices for 20 steps: cross-frame attention
0-19, shape-aware fusion 0-2, AdaIN 16-19).

- `CrossFrameStepHook` tells the cross-frame attention store which step runs and whether its window is open.
- `AnchorX0` records the anchor frame's predicted x0 per step (it edits nothing).
- `AdaINHook` gives x0 the anchor's per-channel mean/std at the same step; `ShapeFusionHook` replaces x0 by the
  anchor's x0 at the same step, warped by the latent flow, where the flow is valid. As in the official code AdaIN
  runs first, so list them in that order. Latents are `b c 1 h w` (one frame), latent flow `b 2 h w`.
"""

from __future__ import annotations

import torch

from src.models.sampling import SamplingHook, StepState
from src.rerender.adain import adain, channel_stats
from src.rerender.cross_frame_attention import CrossFrameStore
from src.rerender.shape_fusion import shape_aware_fusion
from src.rerender.step_windows import StepWindows

__all__ = ["AdaINHook", "AnchorX0", "CrossFrameStepHook", "ShapeFusionHook"]


class CrossFrameStepHook(SamplingHook):
    def __init__(self, store: CrossFrameStore, windows: StepWindows) -> None:
        self.store, self.windows = store, windows

    def before_step(self, state: StepState, x: torch.Tensor) -> torch.Tensor:
        self.store.step = state.index
        self.store.active = self.windows.active("cross_attention", state.index, state.num_steps)
        return x


class AnchorX0(SamplingHook):
    """The anchor frame's x0 per step index (float32, `b c 1 h w`), the reference of AdaIN and shape fusion."""

    def __init__(self) -> None:
        self.x0: dict[int, torch.Tensor] = {}

    def on_x0(self, state: StepState, x0: torch.Tensor) -> torch.Tensor:
        self.x0[state.index] = x0.detach().clone()
        return x0

    def at(self, state: StepState) -> torch.Tensor:
        if state.index not in self.x0:
            raise RuntimeError(
                f"the anchor frame has no x0 for step {state.index}; denoise it with the same schedule"
            )
        return self.x0[state.index]


class AdaINHook(SamplingHook):
    def __init__(self, anchor: AnchorX0, windows: StepWindows) -> None:
        self.anchor, self.windows = anchor, windows

    def on_x0(self, state: StepState, x0: torch.Tensor) -> torch.Tensor:
        if not self.windows.active("adain", state.index, state.num_steps):
            return x0
        mean, std = channel_stats(self.anchor.at(state))
        return adain(x0, mean, std)


class ShapeFusionHook(SamplingHook):
    """x0 <- mask * warp_nearest(anchor x0, latent flow) + (1 - mask) * x0 in the shape-fusion window."""

    def __init__(
        self, anchor: AnchorX0, windows: StepWindows, latent_flow: torch.Tensor, mask: torch.Tensor
    ) -> None:
        self.anchor, self.windows = anchor, windows
        self.latent_flow, self.mask = latent_flow, mask

    def on_x0(self, state: StepState, x0: torch.Tensor) -> torch.Tensor:
        if not self.windows.active("shape_fusion", state.index, state.num_steps):
            return x0
        fused = shape_aware_fusion(x0[:, :, 0], self.anchor.at(state)[:, :, 0], self.latent_flow, self.mask)
        return fused[:, :, None]
