"""DynamiCrafter's frozen first-stage VAE: the official LDM AutoencoderKL as a diffusers AutoencoderKL.

Built from the release's ``first_stage_config`` (``ddconfig``); weights come from the ``first_stage_model.``
part of the released ``model.ckpt``, converted to diffusers names (src.models.dynamicrafter.checkpoint).
Images ``(N, 3, H, W)`` in [-1, 1] <-> latents ``(N, 4, H/8, W/8)`` times ``scale_factor`` (0.18215);
``encode`` samples the posterior as the release does. ``frames_per_chunk`` bounds memory (the release's
``perframe_ae`` is 1). Encoding/decoding is src.models.codecs.AutoencoderKLCodec's, so the module can also hold the tiny codec.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from src.models.codecs import AutoencoderKLCodec
from src.models.weights import load_strict

from .checkpoint import convert_ldm_vae_state_dict, diffusers_vae_config_from_official


class LDMVAECodec(AutoencoderKLCodec):
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
        self._adopt(AutoencoderKL(**config), scale_factor, sample_posterior, frames_per_chunk)

    def load_official(self, state_dict: Mapping[str, torch.Tensor], source: str) -> None:
        """Strict load of the checkpoint's ``first_stage_model.`` part (LDM names, prefix stripped)."""
        load_strict(
            self.vae, convert_ldm_vae_state_dict(state_dict), source, hint="Check model.codec.ddconfig."
        )
