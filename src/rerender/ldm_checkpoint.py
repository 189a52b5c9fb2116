"""Single-file Stable Diffusion 1.5 / ControlNet-1.0 checkpoints (the original LDM key layout) to diffusers
state dicts, with every source tensor accounted for.

The renaming is diffusers' own (`diffusers.loaders.single_file_utils`, what `from_single_file` runs); we add
what `from_single_file` lacks: its load is not strict and only logs unused keys, and its ControlNet
conversion fills absent keys with None. Here a source tensor that the conversion did not use, or a model key
it did not produce, is an error naming the file, the config key and the keys.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

import torch
from diffusers.loaders import single_file_utils as sfu

from src.models.weights import WeightLoadError, load_state_dict_file

__all__ = ["COMPONENT_PREFIXES", "check_no_stray_keys", "convert_component", "read_checkpoint"]

# Where each part lives in an original SD1.5 / ControlNet-1.0 file.
COMPONENT_PREFIXES = {
    "unet": ("model.diffusion_model.",),
    "vae": ("first_stage_model.",),
    "text_encoder": ("cond_stage_model.transformer.",),
    "controlnet": ("control_model.",),
}
# Keys an SD file may carry that no diffusers module holds: the LDM noise-schedule buffers (no dot in the name:
# betas, alphas_cumprod, ...), EMA copies (the non-EMA weights are used, as diffusers does by default), a
# ControlNet-1.0 file's control branch when its SD1.5 base is used as the SD checkpoint, and CLIP's constant
# `position_ids` buffer (rebuilt by transformers; some merged checkpoints store it corrupted as floats).
_IGNORED_PREFIXES = ("model_ema.", "control_model.")
_VAE_ONLY_PREFIXES = ("encoder.", "decoder.", "quant_conv.", "post_quant_conv.")


def _first(keys: list[str], shown: int = 20) -> str:
    return ", ".join(keys[:shown]) + (f", ... ({len(keys)} in total)" if len(keys) > shown else "")


def _file_key(owner: Mapping[tuple[int, torch.dtype], str], tensor: torch.Tensor) -> str:
    """The file's name of a converted tensor (found by storage, since the conversion renames by reference)."""
    return owner.get((tensor.data_ptr(), tensor.dtype), "?")


def _ignored(key: str) -> bool:
    return "." not in key or key.startswith(_IGNORED_PREFIXES) or key.endswith("embeddings.position_ids")


def read_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a .safetensors / .ckpt / .pth file (a Lightning "state_dict" wrapper unwrapped)."""
    return load_state_dict_file(path)


def check_no_stray_keys(checkpoint: Mapping[str, torch.Tensor], kind: str, source: str) -> None:
    """Raise if a file holds keys that belong to no part we load. kind: "sd" (a whole SD1.5 checkpoint) or
    "vae" (a VAE-only file, whose training-loss modules `loss.*` are also ignored)."""
    if kind == "sd":
        known = COMPONENT_PREFIXES["unet"] + COMPONENT_PREFIXES["vae"] + COMPONENT_PREFIXES["text_encoder"]
        what = (
            "Stable Diffusion 1.5 part (UNet `model.diffusion_model.*`, VAE `first_stage_model.*`, text "
            "encoder `cond_stage_model.transformer.*`)"
        )
        hint = "An SD2/SDXL checkpoint, a LoRA or a non-SD file? Rerender runs on SD1.5 checkpoints."
    else:
        known = COMPONENT_PREFIXES["vae"] + _VAE_ONLY_PREFIXES + ("loss.",)
        what = (
            "VAE (`first_stage_model.*`, or bare `encoder.*`/`decoder.*`/`quant_conv.*`/`post_quant_conv.*`)"
        )
        hint = "Is this a VAE file of the SD1.5 kl-f8 autoencoder?"
    stray = sorted(k for k in checkpoint if not k.startswith(known) and not _ignored(k))
    if stray:
        raise WeightLoadError(f"{source}: keys that belong to no {what}: {_first(stray)}\n  {hint}")


def _converter(component: str) -> Callable[[dict, dict], dict]:
    if component == "unet":
        return lambda ckpt, config: sfu.convert_ldm_unet_checkpoint(ckpt, config)
    if component == "vae":
        return lambda ckpt, config: sfu.convert_ldm_vae_checkpoint(ckpt, config)
    if component == "controlnet":
        return lambda ckpt, config: sfu.convert_controlnet_checkpoint(ckpt, config)
    if component == "text_encoder":
        return lambda ckpt, config: sfu.convert_ldm_clip_checkpoint(ckpt)
    raise ValueError(f"unknown component {component!r}")


def _source_part(checkpoint: Mapping[str, torch.Tensor], component: str) -> dict[str, torch.Tensor]:
    """The part's own tensors under their full file names; a bare ControlNet file (v1.1 style, no prefix)
    is taken whole."""
    prefixes = COMPONENT_PREFIXES[component]
    part = {k: v for k, v in checkpoint.items() if k.startswith(prefixes)}
    if component == "controlnet" and not part and "time_embed.0.weight" in checkpoint:
        part = dict(checkpoint)
    if component == "vae" and not part:  # a VAE-only file (vae-ft-mse-840000-ema-pruned): bare names
        part = {k: v for k, v in checkpoint.items() if k.startswith(_VAE_ONLY_PREFIXES)}
    if component == "text_encoder":
        part = {k: v for k, v in part.items() if not k.endswith("embeddings.position_ids")}
    return part


def convert_component(
    checkpoint: Mapping[str, torch.Tensor],
    component: str,
    config: Mapping,
    model: torch.nn.Module,
    source: str,
) -> dict[str, torch.Tensor]:
    """Convert one part of an original-layout checkpoint to `model`'s diffusers names, strictly.

    Raises WeightLoadError naming `source` (file and config key) when the part is absent, when a file tensor of
    the part is not used by the conversion or lands on no model key (named by its file key), or when a model
    key gets no tensor. The caller then loads with `src.models.weights.load_strict`, which also checks shapes.
    """
    part = _source_part(checkpoint, component)
    if not part:
        raise WeightLoadError(
            f"{source}: no {component} weights (expected keys starting with {' or '.join(COMPONENT_PREFIXES[component])})."
        )
    converted = _converter(component)(dict(part), dict(config))
    empty = sorted(k for k, v in converted.items() if v is None)
    converted = {k: v for k, v in converted.items() if v is not None}
    if component == "text_encoder" and not hasattr(model, "text_model"):
        # transformers >= 5.6 flattened CLIPTextModel: its keys have no `text_model.` prefix.
        converted = {k.removeprefix("text_model."): v for k, v in converted.items()}
    owner = {(v.data_ptr(), v.dtype): k for k, v in part.items()}
    used = {(v.data_ptr(), v.dtype) for v in converted.values()}
    unused = sorted(k for k, v in part.items() if (v.data_ptr(), v.dtype) not in used)
    expected = set(model.state_dict())
    unknown = sorted(k for k in converted if k not in expected)
    missing = sorted((expected - set(converted)) | set(empty))
    if unused or unknown or missing:
        lines = [
            f"{source}: the {component} weights do not match the configured model (diffusers' single-file mapping):"
        ]
        if unused:
            lines.append(f"  file keys the conversion did not use: {_first(unused)}")
        if unknown:
            named = [f"{_file_key(owner, converted[k])} (read as {k})" for k in unknown]
            lines.append(f"  file keys with no place in the model: {_first(named)}")
        if missing:
            lines.append(f"  model keys no file key provides: {_first(missing)}")
        lines.append("  Is the file an SD1.5/ControlNet-1.0 checkpoint matching the configs, and undamaged?")
        raise WeightLoadError("\n".join(lines))
    return converted
