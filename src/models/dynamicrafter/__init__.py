"""DynamiCrafter networks (3D UNet, query-transformer Resampler) loadable strictly from the official checkpoints.

Videos are ``b c t h w`` in these models. Build from an official YAML with :func:`unet_from_official_config`
(``model.params.unet_config.params``) and :func:`resampler_from_official_config`
(``model.params.image_proj_stage_config.params``); load ``model.ckpt`` with :func:`load_official_weights`.
"""

from .checkpoint import (
    convert_diffusers_vae_state_dict_to_ldm,
    convert_ldm_vae_state_dict,
    diffusers_vae_config_from_official,
    load_official_checkpoint,
    load_official_weights,
    load_state_dict_strict,
    split_official_state_dict,
)
from .embeddings import timestep_embedding
from .resampler import Resampler, resampler_from_official_config
from .unet import DynamiCrafterUNet, unet_from_official_config

__all__ = [
    "DynamiCrafterUNet",
    "Resampler",
    "convert_diffusers_vae_state_dict_to_ldm",
    "convert_ldm_vae_state_dict",
    "diffusers_vae_config_from_official",
    "load_official_checkpoint",
    "load_official_weights",
    "load_state_dict_strict",
    "resampler_from_official_config",
    "split_official_state_dict",
    "timestep_embedding",
    "unet_from_official_config",
]
