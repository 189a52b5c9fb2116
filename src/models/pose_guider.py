"""Pose Guider: pose images (N, 3, H, W) in [0, 1] -> features (N, out_channels, H/2^k, W/2^k).

Layer layout (one layout for both variants; k = len(block_channels) - 1 stride-2 downsamplings):

    conv_in   3x3, in_channels -> c0, SiLU
    blocks    for each i < k:  3x3 c_i -> c_i, SiLU;  3x3 stride 2 c_i -> c_{i+1}, SiLU
    conv_out  3x3, c_k -> out_channels, zero-initialised

This is Moore-AnimateAnyone's guider, which is ControlNet's conditioning embedding: the attribute names
(`conv_in`, `blocks.{j}`, `conv_out`) and shapes equal diffusers' `ControlNetConditioningEmbedding`, so a
ControlNet's `controlnet_cond_embedding.*` weights (Moore initialises from control_v11p_sd15_openpose) load
strictly. Chosen because Moore is the most faithful runnable reproduction and every later repo injects a
320-channel output after the UNet's `conv_in`; the zero-initialised `conv_out` makes the guider a no-op at
the start of training, so the pretrained UNet's behaviour is untouched. A UNet trained from scratch has no
behaviour to protect, and a zero output also passes no gradient to the guider's inner layers until it has
grown: `zero_output=False` keeps conv_out's default init (the tiny demo's setting, measured in its config).

Two variants, chosen by config:
- `injection="conv_in"` (default, public reproductions): block_channels (16, 32, 96, 256), 320 output
  channels (the UNet's first block width), features added to the output of the UNet's conv_in.
- `injection="latent"` (paper): block_channels (16, 32, 64, 128), Gaussian init, out_channels = latent
  channels, features added to the noisy latent. The paper's "four convolution layers (4x4 kernels, 2x2
  strides, 16/32/64/128 channels, Gaussian init)" is word for word the ControlNet paper's description of
  its condition encoder, whose released implementation is exactly the 3x3 layout above; four stride-2
  convs would also give 1/16 resolution, which cannot be added to the 1/8 latent. So 3x3 kernels and
  three downsamplings are kept here too (as in the Open-AnimateAnyone "original" guider).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["PoseGuider"]

INJECTIONS = ("conv_in", "latent")
INITS = ("default", "gaussian")
GAUSSIAN_STD = 0.02


class PoseGuider(nn.Module):
    """Small conv encoder of pose images whose (by default zero-initialised) output is added inside the denoising UNet."""

    def __init__(
        self,
        in_channels: int = 3,
        block_channels: Sequence[int] = (16, 32, 96, 256),
        out_channels: int = 320,
        injection: str = "conv_in",
        init: str = "default",
        zero_output: bool = True,
    ) -> None:
        super().__init__()
        if injection not in INJECTIONS:
            raise ValueError(f"PoseGuider injection must be one of {INJECTIONS}, got {injection!r}.")
        if init not in INITS:
            raise ValueError(f"PoseGuider init must be one of {INITS}, got {init!r}.")
        block_channels = tuple(int(c) for c in block_channels)
        if len(block_channels) < 1:
            raise ValueError("PoseGuider block_channels needs at least one entry.")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.injection = injection
        self.downsample_factor = 2 ** (len(block_channels) - 1)

        self.conv_in = nn.Conv2d(in_channels, block_channels[0], kernel_size=3, padding=1)
        blocks = []
        for c_in, c_out in zip(block_channels[:-1], block_channels[1:]):
            blocks.append(nn.Conv2d(c_in, c_in, kernel_size=3, padding=1))
            blocks.append(nn.Conv2d(c_in, c_out, kernel_size=3, padding=1, stride=2))
        self.blocks = nn.ModuleList(blocks)
        self.conv_out = nn.Conv2d(block_channels[-1], out_channels, kernel_size=3, padding=1)

        if init == "gaussian":
            for conv in [self.conv_in, *self.blocks]:
                nn.init.normal_(conv.weight, std=GAUSSIAN_STD)
                nn.init.zeros_(conv.bias)
        if zero_output:
            nn.init.zeros_(self.conv_out.weight)
            nn.init.zeros_(self.conv_out.bias)

    def forward(self, pose: torch.Tensor) -> torch.Tensor:
        """pose (N, in_channels, H, W) in [0, 1] -> (N, out_channels, H / downsample_factor, W / downsample_factor)."""
        if pose.ndim != 4 or pose.shape[1] != self.in_channels:
            raise ValueError(
                f"PoseGuider expects pose images (N, {self.in_channels}, H, W), got {tuple(pose.shape)}."
            )
        h, w = pose.shape[-2:]
        if h % self.downsample_factor or w % self.downsample_factor:
            raise ValueError(
                f"PoseGuider: pose size {h}x{w} must be divisible by {self.downsample_factor} "
                f"(2^{len(self.blocks) // 2} stride-2 convs); resize the pose frames to a multiple of it."
            )
        x = F.silu(self.conv_in(pose))
        for conv in self.blocks:
            x = F.silu(conv(x))
        return self.conv_out(x)
