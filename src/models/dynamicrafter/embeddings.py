"""Sinusoidal embeddings for diffusion timesteps and the frame-rate / frame-stride condition.

The layout follows the official DynamiCrafter UNet: ``cat(cos, sin)`` (cosine half first), frequencies
``exp(-ln(max_period) * i / half)`` for ``i < half``. The official code always computes in float32; here the
computation dtype is a parameter so a float64 model can embed in float64 (used by the reference test).
"""

from __future__ import annotations

import math

import torch


def timestep_embedding(
    timesteps: torch.Tensor,
    dim: int,
    max_period: float = 10000.0,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Embed a 1-D tensor of (possibly fractional) timesteps as ``[N, dim]`` sinusoids computed in ``dtype``."""
    if timesteps.ndim != 1:
        raise ValueError(
            f"timestep_embedding expects a 1-D tensor of N timesteps, got shape {tuple(timesteps.shape)}; "
            "flatten or broadcast the timesteps to (batch,) first."
        )
    half = dim // 2
    # Same operation order as the official code, so float32 results agree bit for bit.
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=dtype, device=timesteps.device) / half)
    args = timesteps.to(dtype)[:, None] * freqs[None]
    embedding = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        embedding = torch.cat([embedding, torch.zeros_like(embedding[:, :1])], dim=-1)
    return embedding
