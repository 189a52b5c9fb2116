"""Load the Stable Diffusion 1.5 + ControlNet weights Rerender-A-Video runs on, strictly and offline.

SD1.5 comes from a diffusers folder or from one `.safetensors`/`.ckpt` in the original LDM layout (what civitai
users have); the ControlNet from a diffusers ControlNetModel folder or the original `control_sd15_*.pth`
(ControlNet-1.0: a whole LDM state dict whose `control_model.*` keys are the control branch). Single files are
renamed by diffusers' own single-file mapping (`ldm_checkpoint.py`) against the SD1.5 configs shipped in
`sd15_configs/` (or any folder of the same layout), so nothing is fetched. Every load is strict: a missing
file, key or shape names the file and the config key; a silently half-loaded model is never returned.
Modules are built on the meta device (no random init of ~1.3B parameters) and take the file's tensors.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import nn

from src.models.weights import find_weights_file, load_state_dict_file, load_strict, require_file
from src.rerender.control_maps import CONTROL_TYPES
from src.rerender.ldm_checkpoint import check_no_stray_keys, convert_component, read_checkpoint
from src.rerender.sd_components import SDComponents

__all__ = [
    "CONTROL_TYPES",
    "SD15_CONFIGS",
    "StableDiffusionParts",
    "load_controlnet",
    "load_sd_components",
    "load_stable_diffusion",
    "resolve_dtype",
]

SD15_CONFIGS = Path(__file__).parent / "sd15_configs"
SINGLE_FILE_SUFFIXES = (".safetensors", ".ckpt", ".pth", ".pt", ".bin")
SD_PUBLISHED_AT = (
    "https://huggingface.co/stable-diffusion-v1-5/stable-diffusion-v1-5 (the diffusers folder, or "
    "v1-5-pruned-emaonly.safetensors), or any SD1.5 checkpoint (civitai .safetensors/.ckpt)"
)
TOKENIZER_PUBLISHED_AT = (
    "the tokenizer/ folder of any SD1.5 diffusers copy (vocab.json, merges.txt), e.g. "
    "https://huggingface.co/stable-diffusion-v1-5/stable-diffusion-v1-5/tree/main/tokenizer"
)
VAE_PUBLISHED_AT = (
    "https://huggingface.co/stabilityai/sd-vae-ft-mse-original (vae-ft-mse-840000-ema-pruned, the "
    "official Rerender VAE) or the diffusers folder stabilityai/sd-vae-ft-mse"
)
CONTROLNET_PUBLISHED_AT = {
    "canny": "https://huggingface.co/lllyasviel/ControlNet (models/control_sd15_canny.pth) or the diffusers "
    "folder lllyasviel/sd-controlnet-canny",
    "hed": "https://huggingface.co/lllyasviel/ControlNet (models/control_sd15_hed.pth) or the diffusers folder "
    "lllyasviel/sd-controlnet-hed",
}
_TEXT_WEIGHT_NAMES = ("model.safetensors", "pytorch_model.bin")
_DIFFUSERS_WEIGHT_NAMES = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")
_CONFIGS_AT = "this repository's src/rerender/sd15_configs (the SD1.5 default)"
_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


class StableDiffusionParts(NamedTuple):
    unet: Any
    vae: Any
    text_encoder: Any
    tokenizer: Any
    scheduler_config: dict


def resolve_dtype(dtype: str, device: torch.device | str) -> torch.dtype:
    """`auto`: fp16 on a GPU, fp32 on the CPU; `fp32`/`fp16`/`bf16` as named (half precision needs a GPU)."""
    device = torch.device(device)
    if dtype == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    if dtype not in _DTYPES:
        raise ValueError(f"dtype must be one of auto, {', '.join(_DTYPES)}; got {dtype!r}")
    if dtype != "fp32" and device.type == "cpu":
        raise ValueError(
            f"dtype={dtype} on the CPU: half-precision convolutions are slow or unsupported there. "
            "Use dtype=fp32 (or auto) on the CPU."
        )
    return _DTYPES[dtype]


def _read_json(path: Path, config_key: str, published_at: str) -> dict:
    return json.loads(require_file(path, config_key, published_at).read_text())


def _build_loaded(
    build: Callable[[], nn.Module], state: Mapping[str, torch.Tensor], source: str, dtype: torch.dtype
) -> nn.Module:
    """Build on the meta device, then strictly take `state`'s tensors (cast to `dtype`) as the parameters."""
    with torch.device("meta"):
        module = build()
    state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
    load_strict(module, state, source=source, assign=True)
    left = [name for name, t in [*module.named_parameters(), *module.named_buffers()] if t.is_meta]
    if left:  # a non-persistent buffer the file cannot hold: this module cannot be built on meta
        raise RuntimeError(
            f"{type(module).__name__}: tensors left on the meta device after loading: {left[:5]}"
        )
    return module.eval().requires_grad_(False)


def _build_text_encoder(
    config: dict, state: Mapping[str, torch.Tensor], source: str, dtype: torch.dtype
) -> nn.Module:
    """CLIPTextModel keeps `position_ids` as a non-persistent buffer, so it is built on the CPU (123M
    parameters, seconds), not on the meta device."""
    from transformers import CLIPTextConfig, CLIPTextModel

    module = CLIPTextModel(CLIPTextConfig(**{k: v for k, v in config.items() if k != "architectures"}))
    state = {k: v for k, v in state.items() if not k.endswith("embeddings.position_ids")}  # constant buffer
    if not hasattr(module, "text_model"):  # transformers >= 5.6 flattened CLIPTextModel: no `text_model.`
        state = {k.removeprefix("text_model."): v for k, v in state.items()}
    load_strict(module, state, source=source)
    return module.to(dtype).eval().requires_grad_(False)


def _diffusers_cls(name: str) -> type:
    import diffusers

    return getattr(diffusers, name)


def _load_folder(
    cls_name: str, folder: Path, config_key: str, published_at: str, dtype: torch.dtype
) -> nn.Module:
    """One diffusers (or, for CLIPTextModel, transformers) model folder: config.json + its weights file."""
    config = _read_json(folder / "config.json", config_key, published_at)
    names = _TEXT_WEIGHT_NAMES if cls_name == "CLIPTextModel" else _DIFFUSERS_WEIGHT_NAMES
    weights = find_weights_file(folder, names)
    if weights is None:
        raise FileNotFoundError(
            f"No weights file in {folder}: expected one of {', '.join(names)}. Set "
            f"`{config_key}` to a diffusers folder ({published_at})."
        )
    state = load_state_dict_file(weights)
    source = f"{weights} (config key {config_key})"
    if cls_name == "CLIPTextModel":
        return _build_text_encoder(config, state, source, dtype)
    cls = _diffusers_cls(cls_name)
    fix_legacy_names = getattr(cls, "_fix_state_dict_keys_on_load", None)
    if fix_legacy_names is not None:  # diffusers' own renaming of pre-0.14 attention names (old VAE folders)
        with torch.device("meta"):
            state = cls.from_config(config)._fix_state_dict_keys_on_load(dict(state))
    return _build_loaded(lambda: cls.from_config(config), state, source, dtype)


def _load_single_file_part(
    checkpoint: Mapping[str, torch.Tensor],
    component: str,
    cls_name: str,
    config: dict,
    source: str,
    dtype: torch.dtype,
) -> nn.Module:
    """One part of an original-layout checkpoint, renamed by diffusers' mapping and loaded strictly."""
    if cls_name == "CLIPTextModel":
        from transformers import CLIPTextConfig, CLIPTextModel

        with torch.device("meta"):
            probe = CLIPTextModel(CLIPTextConfig(**{k: v for k, v in config.items() if k != "architectures"}))
        return _build_text_encoder(
            config, convert_component(checkpoint, component, config, probe, source), source, dtype
        )
    cls = _diffusers_cls(cls_name)
    with torch.device("meta"):
        probe = cls.from_config(config)
    converted = convert_component(checkpoint, component, config, probe, source)
    return _build_loaded(lambda: cls.from_config(config), converted, source, dtype)


def _load_vae_override(path: Path, configs: Path, config_key: str, dtype: torch.dtype) -> nn.Module:
    if path.is_dir():
        return _load_folder("AutoencoderKL", path, config_key, VAE_PUBLISHED_AT, dtype)
    source = f"{path} (config key {config_key})"
    checkpoint = read_checkpoint(path)
    check_no_stray_keys(checkpoint, "vae", source)
    config = _read_json(configs / "vae" / "config.json", config_key, VAE_PUBLISHED_AT)
    return _load_single_file_part(checkpoint, "vae", "AutoencoderKL", config, source, dtype)


def _load_tokenizer(path: Path, config_key: str) -> Any:
    from transformers import CLIPTokenizer

    require_file(path, config_key, TOKENIZER_PUBLISHED_AT)
    if (
        not ((path / "vocab.json").is_file() and (path / "merges.txt").is_file())
        and not (path / "tokenizer.json").is_file()
    ):
        raise FileNotFoundError(
            f"{path} (config key {config_key}) holds no CLIP tokenizer: expected vocab.json + "
            f"merges.txt (or tokenizer.json). Such a folder: {TOKENIZER_PUBLISHED_AT}."
        )
    return CLIPTokenizer.from_pretrained(str(path), local_files_only=True)


def load_stable_diffusion(
    checkpoint: str | Path | None,
    config_dir: str | Path | None = None,
    tokenizer: str | Path | None = None,
    vae: str | Path | None = None,
    dtype: str = "auto",
    device: torch.device | str = "cpu",
    key_prefix: str = "model.sd",
) -> StableDiffusionParts:
    """UNet, VAE, text encoder, tokenizer and noise-schedule config of one SD1.5 checkpoint.

    checkpoint: a diffusers folder (unet/ vae/ text_encoder/ tokenizer/ [scheduler/]) or one original-layout
    `.safetensors`/`.ckpt`. config_dir: diffusers-layout configs for a single file (default: the shipped SD1.5
    ones). tokenizer: the CLIP tokenizer folder (default: `<checkpoint>/tokenizer` for a folder; required for a
    single file). vae: an optional VAE that replaces the checkpoint's (a diffusers folder or a single file with
    `first_stage_model.*` or bare encoder/decoder names; the official code swaps in vae-ft-mse-840000).
    """

    def key(name: str) -> str:
        return f"{key_prefix}.{name}"

    torch_dtype = resolve_dtype(dtype, device)
    path = require_file(checkpoint, key("checkpoint"), SD_PUBLISHED_AT)
    configs = SD15_CONFIGS if config_dir is None else require_file(config_dir, key("config_dir"), _CONFIGS_AT)
    parts = {"unet": "UNet2DConditionModel", "vae": "AutoencoderKL", "text_encoder": "CLIPTextModel"}
    if vae:
        del parts["vae"]
    if path.is_dir():
        models = {
            name: _load_folder(cls, path / name, key("checkpoint"), SD_PUBLISHED_AT, torch_dtype)
            for name, cls in parts.items()
        }
        scheduler_file = path / "scheduler" / "scheduler_config.json"
        tokenizer_path = Path(tokenizer) if tokenizer else path / "tokenizer"
    else:
        if path.suffix not in SINGLE_FILE_SUFFIXES:
            raise ValueError(
                f"{path} (config key {key('checkpoint')}): expected a diffusers folder or a single "
                f"file ending in {', '.join(SINGLE_FILE_SUFFIXES)}."
            )
        if not tokenizer:
            raise FileNotFoundError(
                f"A single-file checkpoint ({path}) holds no tokenizer: set `{key('tokenizer')}` to a local CLIP "
                f"tokenizer folder ({TOKENIZER_PUBLISHED_AT}). Nothing is downloaded at run time."
            )
        source = f"{path} (config key {key('checkpoint')})"
        ckpt = read_checkpoint(path)
        check_no_stray_keys(ckpt, "sd", source)
        models = {
            name: _load_single_file_part(
                ckpt,
                name,
                cls,
                _read_json(configs / name / "config.json", key("config_dir"), _CONFIGS_AT),
                source,
                torch_dtype,
            )
            for name, cls in parts.items()
        }
        del ckpt
        scheduler_file = configs / "scheduler" / "scheduler_config.json"
        tokenizer_path = Path(tokenizer)
    if vae:
        models["vae"] = _load_vae_override(
            require_file(vae, key("vae"), VAE_PUBLISHED_AT), configs, key("vae"), torch_dtype
        )
    if not scheduler_file.is_file():  # a diffusers folder without scheduler/: SD1.5's schedule
        scheduler_file = SD15_CONFIGS / "scheduler" / "scheduler_config.json"
    scheduler_config = json.loads(scheduler_file.read_text())
    tok = _load_tokenizer(tokenizer_path, key("tokenizer"))
    models = {name: m.to(device) for name, m in models.items()}
    return StableDiffusionParts(models["unet"], models["vae"], models["text_encoder"], tok, scheduler_config)


def load_controlnet(
    checkpoint: str | Path | None,
    control_type: str = "hed",
    config: str | Path | None = None,
    dtype: str = "auto",
    device: torch.device | str = "cpu",
    key_prefix: str = "model.controlnet",
) -> nn.Module:
    """A ControlNetModel from a diffusers folder or an original `control_sd15_*.pth` (only its `control_model.*`
    keys are read; its SD1.5 base is not used: the SD weights come from `model.sd.checkpoint`).

    config: a ControlNet config.json for a single file (default: the shipped SD1.5 one).
    """
    if control_type not in CONTROL_TYPES:
        raise ValueError(f"{key_prefix}.control_type must be one of {CONTROL_TYPES}, got {control_type!r}")
    key = f"{key_prefix}.checkpoint"
    published_at = CONTROLNET_PUBLISHED_AT[control_type]
    torch_dtype = resolve_dtype(dtype, device)
    path = require_file(checkpoint, key, published_at)
    if path.is_dir():
        model = _load_folder("ControlNetModel", path, key, published_at, torch_dtype)
    else:
        config_path = SD15_CONFIGS / "controlnet" / "config.json" if config is None else config
        cfg = _read_json(Path(config_path), f"{key_prefix}.config", _CONFIGS_AT)
        model = _load_single_file_part(
            read_checkpoint(path),
            "controlnet",
            "ControlNetModel",
            cfg,
            f"{path} (config key {key})",
            torch_dtype,
        )
    return model.to(device)


def call_target(node: Any, **kwargs: Any) -> Any:
    """Call the node's `_target_` with its fields (like hydra's instantiate, but errors arrive unwrapped, so a
    missing file surfaces as the FileNotFoundError that names its config key)."""
    from hydra.utils import get_method
    from omegaconf import DictConfig, OmegaConf

    fields = OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else dict(node)
    return get_method(fields.pop("_target_"))(**fields, **kwargs)


def load_sd_components(section: Any, device: torch.device | str = "cpu") -> SDComponents:
    """Everything the key-frame translator needs, from the model config section (`cfg.model` of experiment=rerender): its `sd` node
    (-> `load_stable_diffusion`) and `controlnet` node (-> `load_controlnet`; `control_type` picks Canny/HED)."""
    sd = call_target(section["sd"], device=device)
    controlnet = call_target(section["controlnet"], device=device)
    return SDComponents(
        unet=sd.unet,
        vae=sd.vae,
        text_encoder=sd.text_encoder,
        tokenizer=sd.tokenizer,
        controlnet=controlnet,
        scheduler_config=dict(sd.scheduler_config),
        control_type=str(section["controlnet"]["control_type"]),
    )
