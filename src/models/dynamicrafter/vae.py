"""DynamiCrafter's frozen first-stage VAE: the official LDM AutoencoderKL as a diffusers AutoencoderKL.

Built from the release's ``first_stage_config`` (``ddconfig``); weights come from the ``first_stage_model.``
part of the released ``model.ckpt``, converted to diffusers names (src.models.dynamicrafter.checkpoint).
Images ``(N, 3, H, W)`` in [-1, 1] <-> latents ``(N, 4, H/8, W/8)`` times ``scale_factor`` (0.18215);
``encode`` samples the posterior as the release does. ``frames_per_chunk`` bounds memory (the release's
``perframe_ae`` is 1). Same interface as src.models.codecs.LatentCodec, so the module can also hold the tiny codec.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from src.models.codecs import LatentCodec
from src.models.weights import load_strict

from .checkpoint import convert_ldm_vae_state_dict, diffusers_vae_config_from_official


class LDMVAECodec(LatentCodec):
    """Frozen AutoencoderKL with the release's architecture; call ``load_official`` with the checkpoint part."""

    def __init__(
        self,
        ddconfig: Mapping[str, Any],
        embed_dim: int = 4,
        scale_factor: float = 0.18215,
        frames_per_chunk: int | None = None,
        sample_posterior: bool = True,
    ) -> None:
        super().__init__()
        from diffusers import AutoencoderKL

        config = diffusers_vae_config_from_official({"embed_dim": embed_dim, "ddconfig": dict(ddconfig)})
        self.vae = AutoencoderKL(**config)
        self.vae.requires_grad_(False).eval()
        self.scale_factor = float(scale_factor)
        self.frames_per_chunk = frames_per_chunk
        self.sample_posterior = sample_posterior
        self.latent_channels = int(config["latent_channels"])
        self.downsample = 2 ** (len(config["block_out_channels"]) - 1)

    def train(self, mode: bool = True) -> LDMVAECodec:
        """Frozen: stays in eval mode whatever the parent does."""
        return super().train(False)

    def load_official(self, state_dict: Mapping[str, torch.Tensor], source: str) -> None:
        """Strict load of the checkpoint's ``first_stage_model.`` part (LDM names, prefix stripped)."""
        load_strict(
            self.vae, convert_ldm_vae_state_dict(state_dict), source, hint="Check model.codec.ddconfig."
        )

    def _chunks(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return x.split(self.frames_per_chunk or x.shape[0])

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        self._check_images(x)
        out = []
        for chunk in self._chunks(x):
            posterior = self.vae.encode(chunk.to(self.vae.dtype)).latent_dist
            z = posterior.sample() if self.sample_posterior else posterior.mode()
            out.append(z * self.scale_factor)
        return torch.cat(out)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        self._check_latents(z)
        return torch.cat(
            [self.vae.decode(c.to(self.vae.dtype) / self.scale_factor).sample for c in self._chunks(z)]
        )
