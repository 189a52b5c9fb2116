"""Attention layers of the DynamiCrafter UNet: dual cross-attention, GEGLU feed-forward, spatial/temporal transformers.

Layouts: the spatial transformer works on ``(b t) c h w`` (frames folded into the batch, tokens = pixels); the
temporal transformer works on ``b c t h w`` and attends over frames, one sequence per pixel ``(b h w) t c``.
Context is ``[(b t), L, context_dim]``: ``text_context_len`` text tokens followed by image tokens.
Every attention goes through ``torch.nn.functional.scaled_dot_product_attention`` (default scale
``dim_head ** -0.5``, as the official code). Parameter names equal the official checkpoints'.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from src.models.keyed_dropout import KeyedDropout

from .blocks import run_checkpointed


def multi_head_sdpa(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int, causal: bool = False
) -> torch.Tensor:
    """SDPA over ``[B, N, heads*d]`` projections; returns ``[B, N, heads*d]``."""
    q, k, v = (rearrange(t, "b n (h d) -> b h n d", h=heads) for t in (q, k, v))
    out = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
    return rearrange(out, "b h n d -> b n (h d)")


class DualCrossAttention(nn.Module):
    """Multi-head attention; as cross-attention it can add a second (image) branch with its own keys/values.

    Without context it is self-attention. With context and ``image_cross_attention``, the first
    ``text_context_len`` tokens go through ``to_k/to_v``, the rest through ``to_k_ip/to_v_ip``, the query is
    shared and the output is ``text_out + scale * image_out``, with ``scale * (tanh(alpha) + 1)`` when the gate is
    learnable (``alpha`` starts at 0, so the gate starts at 1). Without ``image_cross_attention`` the context is
    cut to its text tokens, as in the official code.
    """

    def __init__(
        self,
        query_dim: int,
        context_dim: int | None = None,
        heads: int = 8,
        dim_head: int = 64,
        dropout: float = 0.0,
        image_cross_attention: bool = False,
        image_cross_attention_scale: float = 1.0,
        image_cross_attention_scale_learnable: bool = False,
        text_context_len: int = 77,
        causal: bool = False,
    ) -> None:
        super().__init__()
        inner_dim = heads * dim_head
        context_dim = query_dim if context_dim is None else context_dim
        self.heads = heads
        self.causal = causal
        self.text_context_len = text_context_len
        self.image_cross_attention = image_cross_attention
        self.image_cross_attention_scale = image_cross_attention_scale
        if image_cross_attention_scale_learnable:
            self.alpha = nn.Parameter(torch.tensor(0.0))
        else:
            self.alpha = None
        self.to_q = nn.Linear(query_dim, inner_dim, bias=False)
        self.to_k = nn.Linear(context_dim, inner_dim, bias=False)
        self.to_v = nn.Linear(context_dim, inner_dim, bias=False)
        self.to_out = nn.Sequential(nn.Linear(inner_dim, query_dim), KeyedDropout(dropout))
        if image_cross_attention:
            self.to_k_ip = nn.Linear(context_dim, inner_dim, bias=False)
            self.to_v_ip = nn.Linear(context_dim, inner_dim, bias=False)

    def image_gate(self) -> torch.Tensor | float:
        """The factor on the image branch: the fixed scale, times ``tanh(alpha) + 1`` when learnable."""
        if self.alpha is None:
            return self.image_cross_attention_scale
        return self.image_cross_attention_scale * (torch.tanh(self.alpha) + 1)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        q = self.to_q(x)
        if context is None:
            out = multi_head_sdpa(q, self.to_k(x), self.to_v(x), self.heads, causal=self.causal)
            return self.to_out(out)
        text = context[:, : self.text_context_len]
        out = multi_head_sdpa(q, self.to_k(text), self.to_v(text), self.heads)
        image = context[:, self.text_context_len :]
        # With no image tokens the official branch contributes exactly zero; skip it (SDPA over 0 keys is NaN).
        if self.image_cross_attention and image.shape[1] > 0:
            out_image = multi_head_sdpa(q, self.to_k_ip(image), self.to_v_ip(image), self.heads)
            out = out + self.image_gate() * out_image
        return self.to_out(out)


class GEGLU(nn.Module):
    """Gated GELU projection: ``a * gelu(gate)`` with ``a, gate = proj(x).chunk(2)``."""

    def __init__(self, dim_in: int, dim_out: int) -> None:
        super().__init__()
        self.proj = nn.Linear(dim_in, dim_out * 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, gate = self.proj(x).chunk(2, dim=-1)
        return a * F.gelu(gate)


class FeedForward(nn.Module):
    """GEGLU feed-forward with 4x inner width (keys ``net.0.proj``, ``net.2``)."""

    def __init__(self, dim: int, mult: int = 4, dropout: float = 0.0) -> None:
        super().__init__()
        inner_dim = int(dim * mult)
        self.net = nn.Sequential(GEGLU(dim, inner_dim), KeyedDropout(dropout), nn.Linear(inner_dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class BasicTransformerBlock(nn.Module):
    """Pre-norm block: self-attention, then (dual) cross-attention or a second self-attention, then GEGLU FF."""

    def __init__(
        self,
        dim: int,
        heads: int,
        dim_head: int,
        dropout: float = 0.0,
        context_dim: int | None = None,
        image_cross_attention: bool = False,
        image_cross_attention_scale_learnable: bool = False,
        text_context_len: int = 77,
        causal: bool = False,
        use_checkpoint: bool = False,
    ) -> None:
        super().__init__()
        self.use_checkpoint = use_checkpoint
        self.attn1 = DualCrossAttention(dim, None, heads, dim_head, dropout, causal=causal)
        self.ff = FeedForward(dim, dropout=dropout)
        self.attn2 = DualCrossAttention(
            dim,
            context_dim,
            heads,
            dim_head,
            dropout,
            image_cross_attention=image_cross_attention,
            image_cross_attention_scale_learnable=image_cross_attention_scale_learnable,
            text_context_len=text_context_len,
            causal=causal,
        )
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.norm3 = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        if context is None:
            return run_checkpointed(self, self.use_checkpoint, self._forward, x)
        return run_checkpointed(self, self.use_checkpoint, self._forward, x, context)

    def _forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        x = self.attn1(self.norm1(x)) + x
        x = self.attn2(self.norm2(x), context) + x
        return self.ff(self.norm3(x)) + x


class SpatialTransformer(nn.Module):
    """Per-frame transformer over the H*W tokens of ``(b t) c h w`` features, cross-attending to the context."""

    def __init__(
        self,
        in_channels: int,
        heads: int,
        dim_head: int,
        depth: int = 1,
        dropout: float = 0.0,
        context_dim: int | None = None,
        use_linear: bool = True,
        image_cross_attention: bool = False,
        image_cross_attention_scale_learnable: bool = False,
        text_context_len: int = 77,
        use_checkpoint: bool = False,
    ) -> None:
        super().__init__()
        inner_dim = heads * dim_head
        self.use_linear = use_linear
        self.norm = nn.GroupNorm(32, in_channels, eps=1e-6, affine=True)
        self.proj_in: nn.Module = (
            nn.Linear(in_channels, inner_dim) if use_linear else nn.Conv2d(in_channels, inner_dim, 1)
        )
        self.transformer_blocks = nn.ModuleList(
            BasicTransformerBlock(
                inner_dim,
                heads,
                dim_head,
                dropout=dropout,
                context_dim=context_dim,
                image_cross_attention=image_cross_attention,
                image_cross_attention_scale_learnable=image_cross_attention_scale_learnable,
                text_context_len=text_context_len,
                use_checkpoint=use_checkpoint,
            )
            for _ in range(depth)
        )
        self.proj_out: nn.Module = (
            nn.Linear(inner_dim, in_channels) if use_linear else nn.Conv2d(inner_dim, in_channels, 1)
        )
        nn.init.zeros_(self.proj_out.weight)
        nn.init.zeros_(self.proj_out.bias)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        _, _, height, width = x.shape
        h = self.norm(x)
        if not self.use_linear:
            h = self.proj_in(h)
        h = rearrange(h, "b c h w -> b (h w) c")
        if self.use_linear:
            h = self.proj_in(h)
        for block in self.transformer_blocks:
            h = block(h, context)
        if self.use_linear:
            h = self.proj_out(h)
        h = rearrange(h, "b (h w) c -> b c h w", h=height, w=width)
        if not self.use_linear:
            h = self.proj_out(h)
        return h + x


class TemporalTransformer(nn.Module):
    """Self-attention over frames for every pixel of ``b c t h w`` features (no positional encoding).

    Both attentions of each block are self-attention over the T frames (the official ``only_self_att``).
    ``use_linear=False`` gives the 1x1 ``Conv1d`` projections of the official ``init_attn``.
    """

    def __init__(
        self,
        in_channels: int,
        heads: int,
        dim_head: int,
        depth: int = 1,
        dropout: float = 0.0,
        use_linear: bool = True,
        causal: bool = False,
        use_checkpoint: bool = False,
    ) -> None:
        super().__init__()
        inner_dim = heads * dim_head
        self.use_linear = use_linear
        self.norm = nn.GroupNorm(32, in_channels, eps=1e-6, affine=True)
        self.proj_in: nn.Module = (
            nn.Linear(in_channels, inner_dim) if use_linear else nn.Conv1d(in_channels, inner_dim, 1)
        )
        self.transformer_blocks = nn.ModuleList(
            BasicTransformerBlock(
                inner_dim, heads, dim_head, dropout=dropout, causal=causal, use_checkpoint=use_checkpoint
            )
            for _ in range(depth)
        )
        self.proj_out: nn.Module = (
            nn.Linear(inner_dim, in_channels) if use_linear else nn.Conv1d(inner_dim, in_channels, 1)
        )
        nn.init.zeros_(self.proj_out.weight)
        nn.init.zeros_(self.proj_out.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, _, height, width = x.shape
        h = self.norm(x)  # GroupNorm statistics span (c/32, t, h, w), as in the official code
        if self.use_linear:
            h = self.proj_in(rearrange(h, "b c t h w -> (b h w) t c"))
        else:
            h = rearrange(self.proj_in(rearrange(h, "b c t h w -> (b h w) c t")), "n c t -> n t c")
        for block in self.transformer_blocks:
            h = block(h)
        if self.use_linear:
            h = self.proj_out(h)
        else:
            h = rearrange(self.proj_out(rearrange(h, "n t c -> n c t")), "n c t -> n t c")
        h = rearrange(h, "(b h w) t c -> b c t h w", b=b, h=height, w=width)
        return h + x
