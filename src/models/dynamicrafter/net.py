"""The trainable part of DynamiCrafter in one module: the 3D UNet and the query transformer (Resampler).

``forward(noisy, timesteps, concat_latent, text_tokens, image_tokens, fs)``: the image tokens (OpenCLIP, last
layer) go through the Resampler to ``num_queries`` tokens per frame, appended to the text tokens as the
context; the conditioning frame's latent, repeated over t, is concatenated to the noisy latent along channels
("hybrid" conditioning). Latents are ``b c t h w``. Keys: ``unet.*`` and ``image_proj.*``.
"""

from __future__ import annotations

import torch
from torch import nn

from .attention import DualCrossAttention, TemporalTransformer
from .blocks import TemporalConvBlock
from .resampler import Resampler
from .unet import DynamiCrafterUNet


class DynamiCrafterNet(nn.Module):
    """UNet + Resampler; what a DynamiCrafter fine-tuning run trains and saves."""

    def __init__(self, unet: DynamiCrafterUNet, image_proj: Resampler) -> None:
        super().__init__()
        self.unet = unet
        self.image_proj = image_proj
        out_dim = image_proj.proj_out.out_features
        image_branches = [
            m for m in unet.modules() if isinstance(m, DualCrossAttention) and hasattr(m, "to_k_ip")
        ]
        context_dim = image_branches[0].to_k_ip.in_features if image_branches else None
        if context_dim is not None and out_dim != context_dim:
            raise ValueError(
                f"DynamiCrafterNet: the Resampler's output_dim ({out_dim}) must equal the UNet's context_dim "
                f"({context_dim}); set model.net.image_proj.output_dim."
            )
        if image_proj.video_length is not None and unet.temporal_length is not None:
            if image_proj.video_length != unet.temporal_length:
                raise ValueError(
                    f"DynamiCrafterNet: image_proj.video_length ({image_proj.video_length}) != unet.temporal_length "
                    f"({unet.temporal_length}); the released models use 16 for both."
                )

    @property
    def num_frames(self) -> int | None:
        """Video length fixed by the per-frame learned queries (None: any length, shared queries)."""
        return self.image_proj.video_length

    def context(self, text_tokens: torch.Tensor, image_tokens: torch.Tensor) -> torch.Tensor:
        """``[b, 77, d]`` text tokens + ``[b, n, e]`` CLIP image tokens -> ``[b, 77 + queries * t, d]`` context."""
        return torch.cat([text_tokens, self.image_proj(image_tokens).to(text_tokens.dtype)], dim=1)

    def forward(
        self,
        noisy: torch.Tensor,
        timesteps: torch.Tensor,
        concat_latent: torch.Tensor,
        context: torch.Tensor,
        fs: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Model output for ``noisy`` [b, c, t, h, w] given the repeated conditioning latent and the context."""
        if concat_latent.shape != noisy.shape:
            raise ValueError(
                f"DynamiCrafterNet: the conditioning latent {tuple(concat_latent.shape)} must have the noisy "
                f"latent's shape {tuple(noisy.shape)} (repeat the frame's latent over t)."
            )
        x = torch.cat([noisy, concat_latent.to(noisy.dtype)], dim=1)
        return self.unet(x, timesteps, context, fs)

    # ------------------------------------------------------------------------------------------ freezing
    def temporal_modules(self) -> list[nn.Module]:
        """Temporal layers: every TemporalTransformer (incl. ``init_attn``) and the ResBlocks' temporal convs."""
        return [m for m in self.unet.modules() if isinstance(m, (TemporalTransformer, TemporalConvBlock))]

    def set_trainable(self, freeze_temporal: bool = False) -> None:
        """Everything trainable (the release's fine-tuning), or all but the temporal layers (the authors' advice
        for small data, issues #84/#109: fine-tuned temporal layers lose motion)."""
        self.requires_grad_(True)
        if freeze_temporal:
            for module in self.temporal_modules():
                module.requires_grad_(False)

    def set_gradient_checkpointing(self, enabled: bool) -> None:
        """Activation checkpointing in every res/transformer block (the release trains with it on)."""
        for module in self.modules():
            if isinstance(getattr(module, "use_checkpoint", None), bool):
                module.use_checkpoint = enabled
