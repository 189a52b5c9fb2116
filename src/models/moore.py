"""Moore-AnimateAnyone's released weights, loaded strictly into `AnimateAnyoneNet`.

Moore releases four files (https://huggingface.co/patrolli/AnimateAnyone): `reference_unet.pth`,
`denoising_unet.pth`, `pose_guider.pth` and `motion_module.pth`. Their key layout is in
shared/data/moore_animate_anyone_manifest/. The mapping onto our modules is exact:

- reference_unet.pth -> `reference_unet`: an SD UNet2DConditionModel without conv_norm_out/conv_out (Moore's
  copy has none; ours drops them too, see `drop_reference_head`);
- denoising_unet.pth -> `denoising_unet`: the same names as a diffusers SD UNet (Moore's InflatedConv3d keeps
  4-D weights);
- pose_guider.pth -> `pose_guider`: the same names (`conv_in`, `blocks.*`, `conv_out`);
- motion_module.pth -> motion modules in AnimateDiff's original layout, converted by
  `convert_original_motion_state_dict` and run with a per-frame GroupNorm, as Moore trained them.

Every load is strict; a missing, unexpected or mis-shaped key is an error naming the file and the keys.
Moore's conventions that differ from our defaults come with the net: `weights_origin="moore"` makes the
trainer use Moore's unconditional input (see `src.trainers.animate_anyone`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from diffusers import MotionAdapter, UNet2DConditionModel

from src.config import to_plain
from src.models.animate_anyone import AnimateAnyoneNet, drop_reference_head
from src.models.motion import motion_adapter_from_original
from src.models.pose_guider import PoseGuider
from src.models.weights import WeightLoadError, load_state_dict_file, load_strict, require_file

__all__ = [
    "MOORE_FILES",
    "MOORE_MOTION_MODULE_KWARGS",
    "build_moore_net",
    "load_moore_net",
    "moore_motion_adapter",
    "read_moore_files",
]

MOORE_PUBLISHED_AT = (
    "https://huggingface.co/patrolli/AnimateAnyone (denoising_unet.pth, reference_unet.pth, pose_guider.pth, "
    "motion_module.pth)"
)
MOORE_FILES = ("reference_unet", "denoising_unet", "pose_guider", "motion_module")
# configs/inference/inference_v2.yaml unet_additional_kwargs.motion_module_kwargs (what Moore trains stage 2 with)
MOORE_MOTION_MODULE_KWARGS = {
    "num_attention_heads": 8,
    "num_transformer_block": 1,
    "attention_block_types": ["Temporal_Self", "Temporal_Self"],
    "temporal_position_encoding": True,
    "temporal_position_encoding_max_len": 32,
    "temporal_attention_dim_div": 1,
}
_UNSUPPORTED_MOTION = {
    "attention_block_types": ["Temporal_Self", "Temporal_Self"],
    "temporal_position_encoding": True,
    "temporal_attention_dim_div": 1,
    "cross_frame_attention_mode": None,
}
# AnimateDiff's TemporalTransformer3DModel always uses 32 groups (its norm_num_groups is not passed through).
_MOTION_NORM_GROUPS = 32


def read_moore_files(folder: str | Path, config_key: str = "model.net.moore_dir") -> dict[str, dict[str, torch.Tensor]]:
    """The four (motion_module.pth optional) state dicts of a Moore release folder, by file stem."""
    folder = require_file(folder, config_key, MOORE_PUBLISHED_AT)
    state_dicts = {}
    for name in MOORE_FILES:
        path = folder / f"{name}.pth"
        if name == "motion_module" and not path.is_file():
            continue
        state_dicts[name] = load_state_dict_file(require_file(path, config_key, MOORE_PUBLISHED_AT))
    return state_dicts


def _files_dtype(state_dicts: Mapping[str, Mapping[str, torch.Tensor]], source: str) -> torch.dtype:
    dtypes = {
        name: {v.dtype for k, v in sd.items() if v.is_floating_point() and not k.endswith("pos_encoder.pe")}
        for name, sd in state_dicts.items()
    }
    found = set().union(*dtypes.values())
    if len(found) != 1:
        raise WeightLoadError(
            f"{source}: the files hold mixed floating dtypes {dict((k, sorted(map(str, v))) for k, v in dtypes.items())}; "
            "convert them to one dtype (Moore's release is one dtype throughout)."
        )
    return found.pop()


def _motion_config(motion_module_kwargs: Mapping[str, Any] | None) -> dict[str, Any]:
    kwargs = {**MOORE_MOTION_MODULE_KWARGS, **to_plain(dict(motion_module_kwargs or {}))}
    for key, supported in _UNSUPPORTED_MOTION.items():
        value = kwargs.get(key, supported)
        if (list(value) if isinstance(value, (list, tuple)) else value) != supported:
            raise ValueError(
                f"motion_module_kwargs.{key}={value!r} is not supported: diffusers' motion modules implement "
                f"{key}={supported!r} (Moore's released motion_module.pth uses it)."
            )
    return kwargs


def moore_motion_adapter(
    state_dict: Mapping[str, torch.Tensor], motion_module_kwargs: Mapping[str, Any] | None = None, source: str = ""
) -> MotionAdapter:
    """Moore's motion_module.pth state dict -> a pretrained MotionAdapter (original AnimateDiff layout), in the
    file's dtype (loading into another dtype would round: a float64 file must stay exact)."""
    kwargs = _motion_config(motion_module_kwargs)
    dtype = _files_dtype({"motion_module": state_dict}, source or "motion_module.pth")
    adapter = motion_adapter_from_original(
        dict(state_dict),
        source or "motion_module.pth",
        num_attention_heads=int(kwargs["num_attention_heads"]),
        norm_num_groups=_MOTION_NORM_GROUPS,
        max_seq_length=int(kwargs["temporal_position_encoding_max_len"]),
        dtype=dtype,
    )
    adapter.pretrained_from = source or "motion_module.pth"
    return adapter


def load_moore_motion_adapter(folder: str | Path, motion_module_kwargs: Mapping[str, Any] | None = None) -> MotionAdapter:
    """`folder/motion_module.pth` as a pretrained MotionAdapter (stage 2 from Moore's weights)."""
    path = require_file(Path(folder) / "motion_module.pth", "model.net.moore_dir", MOORE_PUBLISHED_AT)
    return moore_motion_adapter(load_state_dict_file(path), motion_module_kwargs, source=str(path))


def _pose_guider(kwargs: Mapping[str, Any]) -> PoseGuider:
    kwargs = dict(to_plain(dict(kwargs)))
    unknown = set(kwargs) - {"conditioning_embedding_channels", "conditioning_channels", "block_out_channels"}
    if unknown or "conditioning_embedding_channels" not in kwargs:
        raise ValueError(
            f"pose_guider must be Moore's PoseGuider kwargs (conditioning_embedding_channels, block_out_channels, "
            f"optional conditioning_channels); got {sorted(kwargs)}."
        )
    return PoseGuider(
        in_channels=int(kwargs.get("conditioning_channels", 3)),
        block_channels=tuple(kwargs.get("block_out_channels", (16, 32, 64, 128))),
        out_channels=int(kwargs["conditioning_embedding_channels"]),
        injection="conv_in",
    )


def build_moore_net(
    state_dicts: Mapping[str, Mapping[str, torch.Tensor]],
    unet_config: Mapping[str, Any],
    pose_guider: Mapping[str, Any],
    motion_module_kwargs: Mapping[str, Any] | None = None,
    *,
    source: str = "Moore-AnimateAnyone weights",
    with_motion_modules: bool = True,
    **net_kwargs: Any,
) -> AnimateAnyoneNet:
    """An AnimateAnyoneNet holding `state_dicts` ({file stem: state dict}; meta tensors give a meta net).

    `net_kwargs` go to AnimateAnyoneNet (bank_dtype, freeze_reference_last_up_block). With motion modules the
    net is in the temporal stage, their output projections kept and their GroupNorm per frame.
    """
    missing = [name for name in MOORE_FILES[:3] if name not in state_dicts]
    if missing:
        raise WeightLoadError(f"{source}: missing {', '.join(f'{m}.pth' for m in missing)}.")
    dtype = _files_dtype(state_dicts, source)
    meta = any(v.is_meta for sd in state_dicts.values() for v in sd.values())
    config = {k: v for k, v in to_plain(dict(unet_config)).items() if not k.startswith("_")}
    with torch.device("meta" if meta else "cpu"):
        reference = drop_reference_head(UNet2DConditionModel.from_config(config)).to(dtype)
        denoising = UNet2DConditionModel.from_config(config).to(dtype)
        guider = _pose_guider(pose_guider).to(dtype)
    hint = "Check that the folder holds Moore-AnimateAnyone's release and that unet_config is its SD1.5 UNet config."
    load_strict(reference, state_dicts["reference_unet"], f"{source}/reference_unet.pth", hint)
    load_strict(denoising, state_dicts["denoising_unet"], f"{source}/denoising_unet.pth", hint)
    load_strict(guider, state_dicts["pose_guider"], f"{source}/pose_guider.pth", hint)
    net = AnimateAnyoneNet(reference, denoising, guider, weights_origin="moore", **net_kwargs)
    if with_motion_modules and "motion_module" in state_dicts:
        adapter = moore_motion_adapter(
            state_dicts["motion_module"], motion_module_kwargs, source=f"{source}/motion_module.pth"
        )
        net.enable_temporal(adapter, zero_proj_out="never", norm="per_frame")
    return net


def load_moore_net(
    folder: str | Path,
    unet_config: dict,
    pose_guider: dict,
    motion_module_kwargs: dict | None = None,
    **net_kwargs: Any,
) -> AnimateAnyoneNet:
    """Moore's release folder -> AnimateAnyoneNet in the files' dtype (temporal when motion_module.pth is there).

    `unet_config`: the SD UNet config.json as a dict; `pose_guider`: Moore's PoseGuider kwargs
    (conditioning_embedding_channels=320, block_out_channels=(16, 32, 96, 256) in the release);
    `motion_module_kwargs`: Moore's `unet_additional_kwargs.motion_module_kwargs` (None: inference_v2.yaml's).
    """
    return build_moore_net(
        read_moore_files(folder), unet_config, pose_guider, motion_module_kwargs, source=str(folder), **net_kwargs
    )


def read_unet_config(path: str | Path, config_key: str) -> dict:
    """An SD UNet config.json (a file, or a folder holding one) as a dict."""
    path = require_file(path, config_key, "the `unet` folder of an SD 1.5 diffusers repo (config.json)")
    if path.is_dir():
        path = require_file(path / "config.json", config_key, "the `unet` folder of an SD 1.5 diffusers repo")
    return json.loads(path.read_text())
