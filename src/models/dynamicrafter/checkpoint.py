"""Reading official DynamiCrafter checkpoints: file formats, sub-model split, strict loads, VAE key conversion.

The released ``model.ckpt`` files (Hugging Face ``Doubiiu/DynamiCrafter``, ``Doubiiu/DynamiCrafter_512``,
``Doubiiu/DynamiCrafter_1024``) hold one flat state dict for the whole LatentVisualDiffusion model, as a Lightning
``{"state_dict": ...}`` or a DeepSpeed ``{"module": {"_forward_module.<key>": ...}}`` file. The 256 release names
the frame-stride MLP ``framestride_embed``; our UNet (like the official loader's retry) calls it ``fps_embedding``.
"""

from __future__ import annotations

import pickle
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from src.models.weights import load_strict

PUBLISHED_AT = (
    "the official checkpoints are published on Hugging Face as model.ckpt in Doubiiu/DynamiCrafter (256), "
    "Doubiiu/DynamiCrafter_512 and Doubiiu/DynamiCrafter_1024; download one and point the config at the local file"
)
DEEPSPEED_PREFIX = "_forward_module."
LEGACY_RENAMES = {"framestride_embed": "fps_embedding"}

UNET_PREFIX = "model.diffusion_model."
IMAGE_PROJ_PREFIX = "image_proj_model."
VAE_PREFIX = "first_stage_model."
TEXT_ENCODER_PREFIX = "cond_stage_model."
IMAGE_ENCODER_PREFIX = "embedder."
ROOT_PREFIX = ""
SUBMODEL_PREFIXES = (UNET_PREFIX, IMAGE_PROJ_PREFIX, VAE_PREFIX, TEXT_ENCODER_PREFIX, IMAGE_ENCODER_PREFIX)


# --------------------------------------------------------------------------------------------- file formats
def load_official_checkpoint(path: str | Path, allow_pickle: bool = False) -> dict[str, torch.Tensor]:
    """Read an official checkpoint file into a flat ``{key: tensor}`` dict with the names our modules use.

    Accepts Lightning (``state_dict``), DeepSpeed (``module`` with the 16-character ``_forward_module.`` prefix),
    a bare state dict, or ``.safetensors``. Pickled files are read with ``weights_only=True`` unless
    ``allow_pickle`` (only for files you trust).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"DynamiCrafter checkpoint not found: {path}. {PUBLISHED_AT}.")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        raw: Any = load_file(str(path), device="cpu")
    else:
        try:
            raw = torch.load(path, map_location="cpu", weights_only=not allow_pickle)
        except pickle.UnpicklingError as error:
            raise ValueError(
                f"{path}: torch.load(weights_only=True) refused the file ({error}). If you trust the file, call "
                "load_official_checkpoint(path, allow_pickle=True)."
            ) from error
    state_dict = _unwrap(raw, path)
    return rename_legacy_keys(state_dict)


def _unwrap(raw: Any, path: Path) -> dict[str, torch.Tensor]:
    """Pick the state dict out of a Lightning / DeepSpeed / bare checkpoint object."""
    if not isinstance(raw, Mapping):
        raise ValueError(f"{path}: expected a dict checkpoint, got {type(raw).__name__}.")
    if "state_dict" in raw and isinstance(raw["state_dict"], Mapping):
        state_dict = dict(raw["state_dict"])
    elif "module" in raw and isinstance(raw["module"], Mapping):
        state_dict = {
            (k[len(DEEPSPEED_PREFIX) :] if k.startswith(DEEPSPEED_PREFIX) else k): v
            for k, v in raw["module"].items()
        }
    else:
        state_dict = dict(raw)
    not_tensors = [k for k, v in state_dict.items() if not isinstance(v, torch.Tensor)]
    if not_tensors:
        raise ValueError(
            f"{path}: expected a Lightning 'state_dict', a DeepSpeed 'module' or a bare state dict of tensors; "
            f"found non-tensor entries {not_tensors[:20]} ({len(not_tensors)} in all)."
        )
    return state_dict


def rename_legacy_keys(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Apply the 256 release's rename (``framestride_embed`` -> ``fps_embedding``) to every key containing it."""
    renamed: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        for old, new in LEGACY_RENAMES.items():
            key = key.replace(old, new)
        renamed[key] = value
    return renamed


def split_official_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
    """Split the flat dict by sub-model: ``{prefix: {key without prefix: tensor}}``; ``""`` holds root buffers.

    Prefixes: ``model.diffusion_model.``, ``image_proj_model.``, ``first_stage_model.``, ``cond_stage_model.``,
    ``embedder.`` and ``""`` (schedule buffers such as ``betas``, ``scale_arr``). Any other key is an error.
    """
    parts: dict[str, dict[str, torch.Tensor]] = {p: {} for p in (*SUBMODEL_PREFIXES, ROOT_PREFIX)}
    unknown = []
    for key, value in state_dict.items():
        prefix = next((p for p in SUBMODEL_PREFIXES if key.startswith(p)), None)
        if prefix is not None:
            parts[prefix][key[len(prefix) :]] = value
        elif "." not in key:
            parts[ROOT_PREFIX][key] = value
        else:
            unknown.append(key)
    if unknown:
        raise ValueError(
            f"split_official_state_dict: keys outside the known sub-models {list(SUBMODEL_PREFIXES)} and root "
            f"buffers: {unknown[:20]} ({len(unknown)} in all). Is this a DynamiCrafter checkpoint?"
        )
    return parts


# --------------------------------------------------------------------------------------------- strict loads
def load_state_dict_strict(module: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str) -> None:
    """Strict load with the project's named-keys error, plus the usual cause for DynamiCrafter files."""
    load_strict(
        module,
        state_dict,
        source,
        hint="Build the module from the YAML config of the same release (e.g. image_cross_attention_scale_learnable "
        "is true only for the 256 model).",
    )


def load_official_weights(
    path: str | Path,
    unet: nn.Module | None = None,
    image_proj: nn.Module | None = None,
    allow_pickle: bool = False,
) -> dict[str, dict[str, torch.Tensor]]:
    """Read ``path`` and strictly load its UNet / Resampler parts into the given modules; return all parts."""
    parts = split_official_state_dict(load_official_checkpoint(path, allow_pickle=allow_pickle))
    if unet is not None:
        load_state_dict_strict(unet, parts[UNET_PREFIX], f"{path} ({UNET_PREFIX}*)")
    if image_proj is not None:
        load_state_dict_strict(image_proj, parts[IMAGE_PROJ_PREFIX], f"{path} ({IMAGE_PROJ_PREFIX}*)")
    return parts


# --------------------------------------------------------------------------------------------- VAE keys
# LDM (first_stage_model) <-> diffusers AutoencoderKL. Per-level names; the decoder's LDM ``up.i`` is
# diffusers' ``up_blocks.(n_levels - 1 - i)`` because LDM indexes decoder levels by resolution.
_RESNET_PARTS = {
    "norm1": "norm1",
    "conv1": "conv1",
    "norm2": "norm2",
    "conv2": "conv2",
    "nin_shortcut": "conv_shortcut",
}
_ATTN_PARTS = {"norm": "group_norm", "q": "to_q", "k": "to_k", "v": "to_v", "proj_out": "to_out.0"}
_TOP_LEVEL = {
    "encoder.conv_in": "encoder.conv_in",
    "encoder.conv_out": "encoder.conv_out",
    "encoder.norm_out": "encoder.conv_norm_out",
    "decoder.conv_in": "decoder.conv_in",
    "decoder.conv_out": "decoder.conv_out",
    "decoder.norm_out": "decoder.conv_norm_out",
    "quant_conv": "quant_conv",
    "post_quant_conv": "post_quant_conv",
}


def _split_param(key: str) -> tuple[str, str]:
    module, _, param = key.rpartition(".")
    if param not in ("weight", "bias"):
        raise ValueError(f"VAE key {key!r} does not end in .weight or .bias.")
    return module, param


def _decoder_levels(keys: list[str], pattern: str) -> int:
    levels = [int(m.group(1)) for k in keys if (m := re.match(pattern, k))]
    if not levels:
        raise ValueError(f"VAE state dict has no decoder level keys matching {pattern!r}.")
    return max(levels) + 1


def _ldm_module_to_diffusers(module: str, n_levels: int) -> str | None:
    if module in _TOP_LEVEL:
        return _TOP_LEVEL[module]
    if m := re.fullmatch(r"(encoder|decoder)\.mid\.block_([12])\.(\w+)", module):
        return (
            f"{m[1]}.mid_block.resnets.{int(m[2]) - 1}.{_RESNET_PARTS[m[3]]}"
            if m[3] in _RESNET_PARTS
            else None
        )
    if m := re.fullmatch(r"(encoder|decoder)\.mid\.attn_1\.(\w+)", module):
        return f"{m[1]}.mid_block.attentions.0.{_ATTN_PARTS[m[2]]}" if m[2] in _ATTN_PARTS else None
    if m := re.fullmatch(r"encoder\.down\.(\d+)\.block\.(\d+)\.(\w+)", module):
        return (
            f"encoder.down_blocks.{m[1]}.resnets.{m[2]}.{_RESNET_PARTS[m[3]]}"
            if m[3] in _RESNET_PARTS
            else None
        )
    if m := re.fullmatch(r"encoder\.down\.(\d+)\.downsample\.conv", module):
        return f"encoder.down_blocks.{m[1]}.downsamplers.0.conv"
    if m := re.fullmatch(r"decoder\.up\.(\d+)\.block\.(\d+)\.(\w+)", module):
        level = n_levels - 1 - int(m[1])
        return (
            f"decoder.up_blocks.{level}.resnets.{m[2]}.{_RESNET_PARTS[m[3]]}"
            if m[3] in _RESNET_PARTS
            else None
        )
    if m := re.fullmatch(r"decoder\.up\.(\d+)\.upsample\.conv", module):
        return f"decoder.up_blocks.{n_levels - 1 - int(m[1])}.upsamplers.0.conv"
    return None


def _is_attention_projection(diffusers_module: str) -> bool:
    return ".attentions." in diffusers_module and diffusers_module.rsplit(".attentions.0.", 1)[1] in (
        "to_q",
        "to_k",
        "to_v",
        "to_out.0",
    )


def convert_ldm_vae_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """LDM ``AutoencoderKL`` keys (``encoder.down.N.block.M...``, ``mid.attn_1...``) -> diffusers ``AutoencoderKL``.

    A ``first_stage_model.`` prefix is stripped. Mid-block attention 1x1 convolutions ``[C, C, 1, 1]`` become
    Linear weights ``[C, C]``. Keys without a diffusers counterpart (e.g. level attention) are an error.
    """
    sd = {(k[len(VAE_PREFIX) :] if k.startswith(VAE_PREFIX) else k): v for k, v in state_dict.items()}
    n_levels = _decoder_levels(list(sd), r"decoder\.up\.(\d+)\.")
    converted: dict[str, torch.Tensor] = {}
    unknown = []
    for key, value in sd.items():
        module, param = _split_param(key)
        target = _ldm_module_to_diffusers(module, n_levels)
        if target is None:
            unknown.append(key)
            continue
        if _is_attention_projection(target) and param == "weight":
            if value.ndim != 4 or value.shape[2:] != (1, 1):
                raise ValueError(
                    f"VAE key {key!r}: expected a 1x1 conv weight [C, C, 1, 1], got {tuple(value.shape)}."
                )
            value = value[:, :, 0, 0]
        converted[f"{target}.{param}"] = value
    if unknown:
        raise ValueError(
            f"convert_ldm_vae_state_dict: no diffusers AutoencoderKL name for {unknown[:20]} ({len(unknown)} in all); "
            "only VAEs with attention in the mid blocks (attn_resolutions: []) are supported."
        )
    return converted


def _diffusers_module_to_ldm(module: str, n_levels: int) -> str | None:
    inverse_top = {v: k for k, v in _TOP_LEVEL.items()}
    inverse_resnet = {v: k for k, v in _RESNET_PARTS.items()}
    inverse_attn = {v: k for k, v in _ATTN_PARTS.items()}
    if module in inverse_top:
        return inverse_top[module]
    if m := re.fullmatch(r"(encoder|decoder)\.mid_block\.resnets\.([01])\.(\w+)", module):
        return f"{m[1]}.mid.block_{int(m[2]) + 1}.{inverse_resnet[m[3]]}" if m[3] in inverse_resnet else None
    if m := re.fullmatch(r"(encoder|decoder)\.mid_block\.attentions\.0\.(.+)", module):
        return f"{m[1]}.mid.attn_1.{inverse_attn[m[2]]}" if m[2] in inverse_attn else None
    if m := re.fullmatch(r"encoder\.down_blocks\.(\d+)\.resnets\.(\d+)\.(\w+)", module):
        return f"encoder.down.{m[1]}.block.{m[2]}.{inverse_resnet[m[3]]}" if m[3] in inverse_resnet else None
    if m := re.fullmatch(r"encoder\.down_blocks\.(\d+)\.downsamplers\.0\.conv", module):
        return f"encoder.down.{m[1]}.downsample.conv"
    if m := re.fullmatch(r"decoder\.up_blocks\.(\d+)\.resnets\.(\d+)\.(\w+)", module):
        level = n_levels - 1 - int(m[1])
        return f"decoder.up.{level}.block.{m[2]}.{inverse_resnet[m[3]]}" if m[3] in inverse_resnet else None
    if m := re.fullmatch(r"decoder\.up_blocks\.(\d+)\.upsamplers\.0\.conv", module):
        return f"decoder.up.{n_levels - 1 - int(m[1])}.upsample.conv"
    return None


def convert_diffusers_vae_state_dict_to_ldm(
    state_dict: Mapping[str, torch.Tensor],
) -> dict[str, torch.Tensor]:
    """Inverse of :func:`convert_ldm_vae_state_dict`: diffusers ``AutoencoderKL`` keys -> LDM names (no prefix)."""
    n_levels = _decoder_levels(list(state_dict), r"decoder\.up_blocks\.(\d+)\.")
    converted: dict[str, torch.Tensor] = {}
    unknown = []
    for key, value in state_dict.items():
        module, param = _split_param(key)
        target = _diffusers_module_to_ldm(module, n_levels)
        if target is None:
            unknown.append(key)
            continue
        if _is_attention_projection(module) and param == "weight":
            value = value[:, :, None, None]
        converted[f"{target}.{param}"] = value
    if unknown:
        raise ValueError(
            f"convert_diffusers_vae_state_dict_to_ldm: no LDM name for {unknown[:20]} ({len(unknown)} in all)."
        )
    return converted


def diffusers_vae_config_from_official(first_stage_params: Mapping[str, Any]) -> dict[str, Any]:
    """``diffusers.AutoencoderKL`` keyword arguments matching an official ``first_stage_config.params``."""
    from .official_config import official_params

    params = official_params(first_stage_params, "diffusers_vae_config_from_official")
    dd = params["ddconfig"]
    if dd.get("attn_resolutions"):
        raise ValueError(
            f"diffusers_vae_config_from_official: attn_resolutions={dd['attn_resolutions']} has no diffusers "
            "AutoencoderKL equivalent; only attn_resolutions: [] (attention in the mid blocks) is supported."
        )
    if not dd.get("double_z", True) or params["embed_dim"] != dd["z_channels"]:
        raise ValueError(
            "diffusers_vae_config_from_official: needs double_z: true and embed_dim == z_channels "
            f"(got double_z={dd.get('double_z')}, embed_dim={params['embed_dim']}, z_channels={dd['z_channels']})."
        )
    levels = len(dd["ch_mult"])
    return {
        "in_channels": dd["in_channels"],
        "out_channels": dd["out_ch"],
        "down_block_types": ("DownEncoderBlock2D",) * levels,
        "up_block_types": ("UpDecoderBlock2D",) * levels,
        "block_out_channels": tuple(dd["ch"] * m for m in dd["ch_mult"]),
        "layers_per_block": dd["num_res_blocks"],
        "latent_channels": dd["z_channels"],
        "norm_num_groups": 32,
        "sample_size": dd["resolution"],
    }
