"""The query transformer ("Resampler") turning OpenCLIP image tokens into per-frame image-context tokens.

Layout: input ``[b, n_tokens, embedding_dim]`` (all 257 last-layer ViT-H-14 tokens, before ``ln_post``);
output ``[b, num_queries * video_length, output_dim]``, frame-major (the 16 tokens of frame 0 first). The learned
latents attend to ``cat(image tokens, latents)`` in every layer (Perceiver style). Parameter names equal the
official ``image_proj_model`` keys.

Numerics: the official layer computes ``softmax`` in float32 on half inputs. Here attention goes through
``scaled_dot_product_attention`` on query/key/value cast to at least float32 (float64 stays float64), with
autocast disabled for that call so it cannot down-cast, and the result is cast back to the input dtype. This is
at least as precise as the official path; the layer is small (256 queries x 513 keys), so it costs little.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from .official_config import official_params


class PerceiverAttention(nn.Module):
    """Latents (queries) attend to image tokens and themselves; no biases (keys ``norm1/2, to_q, to_kv, to_out``)."""

    def __init__(self, dim: int, dim_head: int = 64, heads: int = 8) -> None:
        super().__init__()
        inner_dim = dim_head * heads
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.to_q = nn.Linear(dim, inner_dim, bias=False)
        self.to_kv = nn.Linear(dim, inner_dim * 2, bias=False)
        self.to_out = nn.Linear(inner_dim, dim, bias=False)

    def forward(self, x: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        x = self.norm1(x)
        latents = self.norm2(latents)
        q = self.to_q(latents)
        k, v = self.to_kv(torch.cat([x, latents], dim=1)).chunk(2, dim=-1)
        compute_dtype = torch.promote_types(q.dtype, torch.float32)
        q, k, v = (rearrange(t.to(compute_dtype), "b n (h d) -> b h n d", h=self.heads) for t in (q, k, v))
        with torch.autocast(
            device_type=q.device.type, enabled=False
        ):  # keep the float32 attention under autocast
            out = F.scaled_dot_product_attention(q, k, v)
        out = rearrange(out, "b h n d -> b n (h d)").to(latents.dtype)
        return self.to_out(out)


def resampler_feed_forward(dim: int, mult: int = 4) -> nn.Sequential:
    """LayerNorm -> Linear (no bias) -> GELU -> Linear (no bias); keys ``0``, ``1``, ``3``."""
    inner_dim = int(dim * mult)
    return nn.Sequential(
        nn.LayerNorm(dim),
        nn.Linear(dim, inner_dim, bias=False),
        nn.GELU(),
        nn.Linear(inner_dim, dim, bias=False),
    )


class Resampler(nn.Module):
    """Learned queries (``num_queries`` per frame, ``video_length`` frames) over image tokens -> context tokens.

    With ``video_length=None`` one set of ``num_queries`` queries is shared (image-only use).
    """

    def __init__(
        self,
        dim: int = 1024,
        depth: int = 8,
        dim_head: int = 64,
        heads: int = 16,
        num_queries: int = 8,
        embedding_dim: int = 768,
        output_dim: int = 1024,
        ff_mult: int = 4,
        video_length: int | None = None,
    ) -> None:
        super().__init__()
        self.num_queries = num_queries
        self.video_length = video_length
        total_queries = num_queries * (video_length or 1)
        self.latents = nn.Parameter(torch.randn(1, total_queries, dim) / dim**0.5)
        self.proj_in = nn.Linear(embedding_dim, dim)
        self.proj_out = nn.Linear(dim, output_dim)
        self.norm_out = nn.LayerNorm(output_dim)
        self.layers = nn.ModuleList(
            nn.ModuleList([PerceiverAttention(dim, dim_head, heads), resampler_feed_forward(dim, ff_mult)])
            for _ in range(depth)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[b, n_tokens, embedding_dim]`` image tokens -> ``[b, num_queries * video_length, output_dim]``."""
        if x.ndim != 3 or x.shape[-1] != self.proj_in.in_features:
            raise ValueError(
                f"Resampler: expected image tokens [b, n_tokens, {self.proj_in.in_features}] (OpenCLIP last-layer "
                f"tokens), got shape {tuple(x.shape)}."
            )
        latents = self.latents.expand(x.shape[0], -1, -1)
        x = self.proj_in(x)
        for attn, ff in self.layers:
            latents = attn(x, latents) + latents
            latents = ff(latents) + latents
        return self.norm_out(self.proj_out(latents))


def resampler_from_official_config(cfg: Mapping[str, Any], **overrides: Any) -> Resampler:
    """Build our Resampler from an official YAML's ``model.params.image_proj_stage_config.params``."""
    params = {**official_params(cfg, "resampler_from_official_config"), **overrides}
    supported = [
        "dim",
        "depth",
        "dim_head",
        "heads",
        "num_queries",
        "embedding_dim",
        "output_dim",
        "ff_mult",
        "video_length",
    ]
    unknown = sorted(set(params) - set(supported))
    if unknown:
        raise ValueError(
            f"resampler_from_official_config: unknown image_proj_stage_config params {unknown}; supported: "
            f"{supported}. Remove them from model.params.image_proj_stage_config.params."
        )
    return Resampler(**params)
