"""The DynamiCrafter / VideoCrafter 3D UNet, with parameter names and shapes equal to the official checkpoints'.

Layout: ``x`` is ``b c t h w`` (c = noisy latent channels + the conditioning frame's latent repeated over t);
inside, spatial layers see ``(b t) c h w`` and temporal layers ``b c t h w``. ``context`` is ``[b, L, d]``:
``text_context_len`` text tokens, then image-context tokens (``image_tokens_per_frame`` per frame, frame-major).
Build it from an official YAML's ``model.params.unet_config.params`` with :func:`unet_from_official_config`.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from einops import rearrange
from torch import nn

from .attention import SpatialTransformer, TemporalTransformer
from .blocks import Downsample, ResBlock, Upsample, float_group_norm
from .embeddings import timestep_embedding
from .official_config import official_params


class UNetStage(nn.ModuleList):
    """One entry of ``input_blocks`` / ``output_blocks`` / ``middle_block``: layers applied in order.

    Kept as a ModuleList so that keys are ``<stage>.<index>.<...>`` as in the official ``TimestepEmbedSequential``.
    """

    def forward(
        self, h: torch.Tensor, emb: torch.Tensor, context: torch.Tensor, num_frames: int
    ) -> torch.Tensor:
        for layer in self:
            if isinstance(layer, ResBlock):
                h = layer(h, emb, num_frames)
            elif isinstance(layer, SpatialTransformer):
                h = layer(h, context)
            elif isinstance(layer, TemporalTransformer):
                h = rearrange(h, "(b t) c h w -> b c t h w", t=num_frames)
                h = rearrange(layer(h), "b c t h w -> (b t) c h w")
            else:
                h = layer(h)
        return h


# Flags of the official UNetModel whose only value implemented here is the one shown.
_FIXED_FLAGS: dict[str, Any] = {
    "dims": 2,
    "use_fp16": False,
    "resblock_updown": False,
    "use_relative_position": False,
    "temporal_selfatt_only": True,
}
_FIXED_FLAG_HINTS: dict[str, str] = {
    "dims": "only 2-D spatial convolutions (the video axis is handled by the temporal layers)",
    "use_fp16": "run in half precision with autocast or model.to(dtype) instead",
    "resblock_updown": "Down/Upsample layers (conv_resample) are implemented, ResBlock resampling is not",
    "use_relative_position": "relative temporal position embeddings are not implemented",
    "temporal_selfatt_only": "temporal transformers are self-attention only (context-conditioned ones are not implemented)",
}


class DynamiCrafterUNet(nn.Module):
    """3D UNet: ResBlocks with temporal convs, spatial transformers with dual cross-attention, temporal transformers.

    Constructor arguments are the official ``UNetModel``'s (same names and defaults) plus ``text_context_len``,
    ``image_tokens_per_frame`` and ``temporal_conv_dropout`` (the official hard-coded 77, 16 and 0.1; the last is
    exposed so equivalence checks can switch off the one randomness that depends on how samples are batched). ``forward(x, timesteps, context, fs)``.
    One default differs: ``use_relative_position`` is False (the official default True is not implemented);
    :func:`unet_from_official_config` still reads an omitted flag as the official True and rejects it.
    """

    def __init__(
        self,
        in_channels: int,
        model_channels: int,
        out_channels: int,
        num_res_blocks: int,
        attention_resolutions: Sequence[int],
        dropout: float = 0.0,
        channel_mult: Sequence[int] = (1, 2, 4, 8),
        conv_resample: bool = True,
        dims: int = 2,
        context_dim: int | None = None,
        use_scale_shift_norm: bool = False,
        resblock_updown: bool = False,
        num_heads: int = -1,
        num_head_channels: int = -1,
        transformer_depth: int = 1,
        use_linear: bool = False,
        use_checkpoint: bool = False,
        temporal_conv: bool = False,
        tempspatial_aware: bool = False,
        temporal_attention: bool = True,
        use_relative_position: bool = False,
        use_causal_attention: bool = False,
        temporal_length: int | None = None,
        use_fp16: bool = False,
        addition_attention: bool = False,
        temporal_selfatt_only: bool = True,
        image_cross_attention: bool = False,
        image_cross_attention_scale_learnable: bool = False,
        default_fs: int = 4,
        fs_condition: bool = False,
        text_context_len: int = 77,
        image_tokens_per_frame: int = 16,
        temporal_conv_dropout: float = 0.1,
    ) -> None:
        super().__init__()
        given = {
            "dims": dims,
            "use_fp16": use_fp16,
            "resblock_updown": resblock_updown,
            "use_relative_position": use_relative_position,
            "temporal_selfatt_only": temporal_selfatt_only,
        }
        for name, value in given.items():
            if value != _FIXED_FLAGS[name]:
                raise ValueError(
                    f"DynamiCrafterUNet: {name}={value!r} is not supported; supported: {name}={_FIXED_FLAGS[name]!r} "
                    f"({_FIXED_FLAG_HINTS[name]}). Set it in the unet_config params."
                )
        if context_dim is None:
            raise ValueError(
                "DynamiCrafterUNet: context_dim is required (the width of the text/image context tokens)."
            )
        if num_heads == -1 and num_head_channels == -1:
            raise ValueError("DynamiCrafterUNet: set either num_heads or num_head_channels (both are -1).")
        if addition_attention and num_head_channels == -1:
            raise ValueError(
                "DynamiCrafterUNet: addition_attention builds init_attn with 8 heads of num_head_channels; "
                "set num_head_channels (the official configs use 64)."
            )

        self.in_channels = in_channels
        self.model_channels = model_channels
        self.out_channels = out_channels
        self.temporal_length = temporal_length
        self.default_fs = default_fs
        self.fs_condition = fs_condition
        self.addition_attention = addition_attention
        self.text_context_len = text_context_len
        self.image_tokens_per_frame = image_tokens_per_frame
        self.use_checkpoint = use_checkpoint
        time_embed_dim = model_channels * 4

        def heads_for(ch: int) -> tuple[int, int]:
            if num_head_channels == -1:
                return num_heads, ch // num_heads
            return ch // num_head_channels, num_head_channels

        def res_block(ch_in: int, ch_out: int | None = None) -> ResBlock:
            return ResBlock(
                ch_in,
                time_embed_dim,
                dropout,
                out_channels=ch_out,
                use_scale_shift_norm=use_scale_shift_norm,
                use_temporal_conv=temporal_conv,
                tempspatial_aware=tempspatial_aware,
                use_checkpoint=use_checkpoint,
                temporal_conv_dropout=temporal_conv_dropout,
            )

        def attention_layers(ch: int) -> list[nn.Module]:
            heads, dim_head = heads_for(ch)
            layers: list[nn.Module] = [
                SpatialTransformer(
                    ch,
                    heads,
                    dim_head,
                    depth=transformer_depth,
                    context_dim=context_dim,
                    use_linear=use_linear,
                    image_cross_attention=image_cross_attention,
                    image_cross_attention_scale_learnable=image_cross_attention_scale_learnable,
                    text_context_len=text_context_len,
                    use_checkpoint=use_checkpoint,
                )
            ]
            if temporal_attention:
                layers.append(
                    TemporalTransformer(
                        ch,
                        heads,
                        dim_head,
                        depth=transformer_depth,
                        use_linear=use_linear,
                        causal=use_causal_attention,
                        use_checkpoint=use_checkpoint,
                    )
                )
            return layers

        self.time_embed = nn.Sequential(
            nn.Linear(model_channels, time_embed_dim), nn.SiLU(), nn.Linear(time_embed_dim, time_embed_dim)
        )
        if fs_condition:
            self.fps_embedding = nn.Sequential(
                nn.Linear(model_channels, time_embed_dim),
                nn.SiLU(),
                nn.Linear(time_embed_dim, time_embed_dim),
            )
            nn.init.zeros_(self.fps_embedding[-1].weight)
            nn.init.zeros_(self.fps_embedding[-1].bias)

        self.input_blocks = nn.ModuleList([UNetStage([nn.Conv2d(in_channels, model_channels, 3, padding=1)])])
        if addition_attention:
            # Official init_attn: 8 heads of num_head_channels, built without use_linear (Conv1d projections).
            self.init_attn = UNetStage(
                [
                    TemporalTransformer(
                        model_channels,
                        8,
                        num_head_channels,
                        depth=transformer_depth,
                        use_linear=False,
                        causal=False,
                        use_checkpoint=use_checkpoint,
                    )
                ]
            )

        skip_channels = [model_channels]
        ch = model_channels
        ds = 1
        for level, mult in enumerate(channel_mult):
            for _ in range(num_res_blocks):
                layers: list[nn.Module] = [res_block(ch, mult * model_channels)]
                ch = mult * model_channels
                if ds in attention_resolutions:
                    layers += attention_layers(ch)
                self.input_blocks.append(UNetStage(layers))
                skip_channels.append(ch)
            if level != len(channel_mult) - 1:
                self.input_blocks.append(UNetStage([Downsample(ch, conv_resample)]))
                skip_channels.append(ch)
                ds *= 2

        middle = [res_block(ch), *attention_layers(ch), res_block(ch)]
        self.middle_block = UNetStage(middle)

        self.output_blocks = nn.ModuleList()
        for level, mult in reversed(list(enumerate(channel_mult))):
            for i in range(num_res_blocks + 1):
                layers = [res_block(ch + skip_channels.pop(), mult * model_channels)]
                ch = mult * model_channels
                if ds in attention_resolutions:
                    layers += attention_layers(ch)
                if level and i == num_res_blocks:
                    layers.append(Upsample(ch, conv_resample))
                    ds //= 2
                self.output_blocks.append(UNetStage(layers))

        self.out = nn.Sequential(
            float_group_norm(ch), nn.SiLU(), nn.Conv2d(model_channels, out_channels, 3, padding=1)
        )
        nn.init.zeros_(self.out[-1].weight)
        nn.init.zeros_(self.out[-1].bias)

    # ----------------------------------------------------------------------------------------------- helpers
    def _per_batch(
        self, value: torch.Tensor | float | int, batch: int, name: str, device: torch.device
    ) -> torch.Tensor:
        """Turn a scalar or ``(B,)`` tensor into a ``(B,)`` tensor."""
        value = torch.as_tensor(value, device=device)
        if value.ndim == 0:
            return value.expand(batch)
        if value.shape != (batch,):
            raise ValueError(
                f"DynamiCrafterUNet: {name} must be a scalar or have shape ({batch},) (one per video), "
                f"got shape {tuple(value.shape)}."
            )
        return value

    def per_frame_context(self, context: torch.Tensor, num_frames: int) -> torch.Tensor:
        """``[b, L, d]`` -> ``[(b t), L', d]``: per-frame image tokens when L == text + per_frame * t, else repeat."""
        n_text = self.text_context_len
        if context.shape[1] == n_text + self.image_tokens_per_frame * num_frames:
            text = context[:, :n_text].repeat_interleave(num_frames, dim=0)
            image = rearrange(context[:, n_text:], "b (t l) c -> (b t) l c", t=num_frames)
            return torch.cat([text, image], dim=1)
        return context.repeat_interleave(num_frames, dim=0)

    def _embedding(
        self, timesteps: torch.Tensor, fs: torch.Tensor | float | int | None, x: torch.Tensor
    ) -> torch.Tensor:
        """Timestep embedding plus (when ``fs_condition``) the frame-rate/stride embedding, ``[b, 4*model_channels]``."""
        b = x.shape[0]
        # Sinusoids in float32 as the official code, or float64 for a float64 model.
        emb_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
        t = self._per_batch(timesteps, b, "timesteps", x.device)
        emb = self.time_embed(timestep_embedding(t, self.model_channels, dtype=emb_dtype).to(x.dtype))
        if self.fs_condition:
            fs_t = self._per_batch(self.default_fs if fs is None else fs, b, "fs", x.device)
            emb = emb + self.fps_embedding(
                timestep_embedding(fs_t, self.model_channels, dtype=emb_dtype).to(x.dtype)
            )
        return emb

    # ----------------------------------------------------------------------------------------------- forward
    def forward(
        self,
        x: torch.Tensor,
        timesteps: torch.Tensor | float | int,
        context: torch.Tensor | None = None,
        fs: torch.Tensor | float | int | None = None,
    ) -> torch.Tensor:
        """Predict the noise / v for ``x`` [b, c, t, h, w]; ``context`` [b, L, d]; ``fs`` None uses default_fs."""
        if x.ndim != 5 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"DynamiCrafterUNet: x must be [b, {self.in_channels}, t, h, w] (noisy latent + repeated "
                f"conditioning latent along channels), got shape {tuple(x.shape)}."
            )
        if context is None or context.ndim != 3 or context.shape[0] != x.shape[0]:
            raise ValueError(
                "DynamiCrafterUNet: context must be [b, L, context_dim] (text tokens followed by image-context "
                f"tokens) with the batch of x ({x.shape[0]}), got "
                f"{None if context is None else tuple(context.shape)}."
            )
        b, _, num_frames, _, _ = x.shape
        emb = self._embedding(timesteps, fs, x).repeat_interleave(num_frames, dim=0)
        context = self.per_frame_context(context, num_frames)

        h = rearrange(x, "b c t h w -> (b t) c h w")
        skips = []
        for index, stage in enumerate(self.input_blocks):
            h = stage(h, emb, context, num_frames)
            if index == 0 and self.addition_attention:
                h = self.init_attn(h, emb, context, num_frames)
            skips.append(h)
        h = self.middle_block(h, emb, context, num_frames)
        for stage in self.output_blocks:
            h = stage(torch.cat([h, skips.pop()], dim=1), emb, context, num_frames)
        y = self.out(h.to(x.dtype))
        return rearrange(y, "(b t) c h w -> b c t h w", b=b)


def unet_from_official_config(cfg: Mapping[str, Any], **overrides: Any) -> DynamiCrafterUNet:
    """Build our UNet from an official YAML's ``model.params.unet_config.params`` (unknown keys are an error)."""
    params = {**official_params(cfg, "unet_from_official_config"), **overrides}
    params.setdefault("use_relative_position", True)  # the official UNetModel default
    supported = [p for p in inspect.signature(DynamiCrafterUNet.__init__).parameters if p != "self"]
    unknown = sorted(set(params) - set(supported))
    if unknown:
        raise ValueError(
            f"unet_from_official_config: unknown unet_config params {unknown}; supported: {supported}. "
            "Remove them from model.params.unet_config.params."
        )
    return DynamiCrafterUNet(**params)
