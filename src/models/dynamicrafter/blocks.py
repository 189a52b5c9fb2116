"""Convolutional building blocks of the DynamiCrafter 3D UNet: ResBlock with temporal convolutions, Down/Upsample.

Layout: spatial layers see frames folded into the batch, ``(b t) c h w``; the temporal convolution unfolds them
to ``b c t h w``. Submodule names (``in_layers``, ``emb_layers``, ``out_layers``, ``skip_connection``,
``temopral_conv`` -- the official spelling) and their indices equal the official checkpoints' key layout.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn
from torch.utils.checkpoint import checkpoint

from src.models.keyed_dropout import KeyedDropout


def run_checkpointed(module: nn.Module, enabled: bool, fn, *args: torch.Tensor) -> torch.Tensor:
    """Run ``fn(*args)`` under non-reentrant activation checkpointing when enabled and the module trains."""
    if enabled and module.training and torch.is_grad_enabled():
        return checkpoint(fn, *args, use_reentrant=False)
    return fn(*args)


class FloatGroupNorm(nn.GroupNorm):
    """GroupNorm that computes in at least float32 (as the official ``GroupNormSpecific``), never down-casting.

    Half/bfloat16 inputs are normalised in float32 and cast back; float32 and float64 inputs stay as they are.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        compute_dtype = torch.promote_types(x.dtype, torch.float32)
        weight = self.weight.to(compute_dtype) if self.weight is not None else None
        bias = self.bias.to(compute_dtype) if self.bias is not None else None
        out = F.group_norm(x.to(compute_dtype), self.num_groups, weight, bias, self.eps)
        return out.to(x.dtype)


def float_group_norm(channels: int, num_groups: int = 32) -> FloatGroupNorm:
    """The ResBlock / output normalisation: 32 groups, eps 1e-5, computed in float32 or wider."""
    return FloatGroupNorm(num_groups, channels)


class TemporalConvBlock(nn.Module):
    """Four (GroupNorm, SiLU, [KeyedDropout], Conv3d over time) stages with a residual connection, on ``b c t h w``.

    The last convolution is zero-initialised so a fresh block is the identity. ``spatial_aware`` widens the
    kernels to (3,3,1) / (3,1,3) as the official ``tempspatial_aware`` option does.
    """

    def __init__(self, channels: int, dropout: float = 0.1, spatial_aware: bool = False) -> None:
        super().__init__()
        kernel_h, pad_h = ((3, 3, 1), (1, 1, 0)) if spatial_aware else ((3, 1, 1), (1, 0, 0))
        kernel_w, pad_w = ((3, 1, 3), (1, 0, 1)) if spatial_aware else ((3, 1, 1), (1, 0, 0))
        self.conv1 = nn.Sequential(
            nn.GroupNorm(32, channels), nn.SiLU(), nn.Conv3d(channels, channels, kernel_h, padding=pad_h)
        )
        self.conv2 = nn.Sequential(
            nn.GroupNorm(32, channels),
            nn.SiLU(),
            KeyedDropout(dropout),
            nn.Conv3d(channels, channels, kernel_w, padding=pad_w),
        )
        self.conv3 = nn.Sequential(
            nn.GroupNorm(32, channels),
            nn.SiLU(),
            KeyedDropout(dropout),
            nn.Conv3d(channels, channels, kernel_h, padding=pad_h),
        )
        self.conv4 = nn.Sequential(
            nn.GroupNorm(32, channels),
            nn.SiLU(),
            KeyedDropout(dropout),
            nn.Conv3d(channels, channels, kernel_w, padding=pad_w),
        )
        nn.init.zeros_(self.conv4[-1].weight)
        nn.init.zeros_(self.conv4[-1].bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv4(self.conv3(self.conv2(self.conv1(x))))


class ResBlock(nn.Module):
    """Timestep-conditioned residual block on ``(b t) c h w`` with an optional temporal convolution block.

    ``forward(x, emb, num_frames)``: ``emb`` is ``[(b t), emb_channels]``; ``num_frames`` unfolds the batch
    for the temporal convolution.
    """

    def __init__(
        self,
        channels: int,
        emb_channels: int,
        dropout: float,
        out_channels: int | None = None,
        use_scale_shift_norm: bool = False,
        use_temporal_conv: bool = False,
        tempspatial_aware: bool = False,
        use_checkpoint: bool = False,
        temporal_conv_dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.out_channels = out_channels or channels
        self.use_scale_shift_norm = use_scale_shift_norm
        self.use_checkpoint = use_checkpoint
        self.in_layers = nn.Sequential(
            float_group_norm(channels), nn.SiLU(), nn.Conv2d(channels, self.out_channels, 3, padding=1)
        )
        emb_out = 2 * self.out_channels if use_scale_shift_norm else self.out_channels
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_channels, emb_out))
        self.out_layers = nn.Sequential(
            float_group_norm(self.out_channels),
            nn.SiLU(),
            KeyedDropout(dropout),
            nn.Conv2d(self.out_channels, self.out_channels, 3, padding=1),
        )
        nn.init.zeros_(self.out_layers[-1].weight)
        nn.init.zeros_(self.out_layers[-1].bias)
        if self.out_channels == channels:
            self.skip_connection: nn.Module = nn.Identity()
        else:
            self.skip_connection = nn.Conv2d(channels, self.out_channels, 1)
        self.temopral_conv = (
            TemporalConvBlock(
                self.out_channels, dropout=temporal_conv_dropout, spatial_aware=tempspatial_aware
            )
            if use_temporal_conv
            else None
        )

    def forward(self, x: torch.Tensor, emb: torch.Tensor, num_frames: int) -> torch.Tensor:
        return run_checkpointed(
            self, self.use_checkpoint, lambda a, b: self._forward(a, b, num_frames), x, emb
        )

    def _forward(self, x: torch.Tensor, emb: torch.Tensor, num_frames: int) -> torch.Tensor:
        h = self.in_layers(x)
        emb_out = self.emb_layers(emb).to(h.dtype)[..., None, None]
        if self.use_scale_shift_norm:
            scale, shift = emb_out.chunk(2, dim=1)
            h = self.out_layers[0](h) * (1 + scale) + shift
            h = self.out_layers[1:](h)
        else:
            h = self.out_layers(h + emb_out)
        h = self.skip_connection(x) + h
        if self.temopral_conv is not None:
            h = rearrange(h, "(b t) c h w -> b c t h w", t=num_frames)
            h = self.temopral_conv(h)
            h = rearrange(h, "b c t h w -> (b t) c h w")
        return h


class Downsample(nn.Module):
    """Halve H and W: a stride-2 3x3 convolution (key ``op``), or 2x2 average pooling without ``use_conv``."""

    def __init__(self, channels: int, use_conv: bool = True) -> None:
        super().__init__()
        self.op = nn.Conv2d(channels, channels, 3, stride=2, padding=1) if use_conv else nn.AvgPool2d(2, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class Upsample(nn.Module):
    """Double H and W by nearest-neighbour interpolation, then an optional 3x3 convolution (key ``conv``)."""

    def __init__(self, channels: int, use_conv: bool = True) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1) if use_conv else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2, mode="nearest")
        return self.conv(x) if self.conv is not None else x
