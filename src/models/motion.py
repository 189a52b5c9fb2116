"""AnimateDiff motion modules through diffusers' MotionAdapter / UNetMotionModel.

`load_motion_adapter` reads a diffusers folder or an original AnimateDiff checkpoint (mm_sd_v15_v2.ckpt
style), converts the names, infers the adapter config from the tensor shapes and loads strictly: a motion
module that silently failed to load (Moore-AnimateAnyone issues #31/#32) is the classic cause of flicker.
Videos entering UNetMotionModel are `b c t h w`; it folds frames into the batch b-major internally.

Motion-module GroupNorm: diffusers' AnimateDiffTransformer3D normalises a sample over all its frames at once,
while original AnimateDiff and Moore-AnimateAnyone normalise each frame separately (`(b f) c h w`), which is
what every `mm_sd_v15*.ckpt` and Moore's motion_module.pth were trained with (on shared weights the outputs
differ by 9 % relative). `to_motion_unet(norm="per_frame")` (the default) puts a `PerFrameGroupNorm` (same
parameters, so the same state-dict names) in each motion module; `norm="across_frames"` keeps diffusers' norm,
for adapters trained with diffusers' UNetMotionModel.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers import MotionAdapter, UNet2DConditionModel, UNetMotionModel
from diffusers.models.unets.unet_motion_model import AnimateDiffTransformer3D

from src.models.weights import (
    WeightLoadError,
    load_diffusers_model,
    load_state_dict_file,
    load_strict,
    require_file,
)

__all__ = [
    "build_motion_adapter",
    "load_motion_adapter",
    "convert_original_motion_state_dict",
    "infer_motion_adapter_config",
    "to_motion_unet",
    "motion_parameter_names",
    "motion_adapter_from_original",
    "PerFrameGroupNorm",
    "MOTION_NORMS",
    "ZERO_PROJ_OUT",
    "MOTION_PUBLISHED_AT",
]

MOTION_NORMS = ("per_frame", "across_frames")
# fresh: zero the output projection of freshly initialised motion modules only; always / never.
ZERO_PROJ_OUT = ("fresh", "always", "never")

MOTION_PUBLISHED_AT = (
    "https://huggingface.co/guoyww/animatediff (mm_sd_v15_v2.ckpt, original layout) or "
    "https://huggingface.co/guoyww/animatediff-motion-adapter-v1-5-2 (diffusers folder)"
)
# Maximum difference tolerated between a checkpoint's sinusoidal table and diffusers' own (fp16 storage).
_PE_TOLERANCE = 1e-3

# original AnimateDiff name piece -> diffusers name piece, inside one motion module (see module docstring).
_BLOCK_RENAMES = (
    (re.compile(r"\.attention_blocks\.0\."), ".attn1."),
    (re.compile(r"\.attention_blocks\.1\."), ".attn2."),
    (re.compile(r"\.norms\.0\."), ".norm1."),
    (re.compile(r"\.norms\.1\."), ".norm2."),
    (re.compile(r"\.ff_norm\."), ".norm3."),
)
_ORIGINAL_KEY = re.compile(
    r"^(?P<prefix>(down_blocks|up_blocks)\.\d+\.motion_modules\.\d+|mid_block\.motion_modules\.\d+)"
    r"\.temporal_transformer\.(?P<rest>.+)$"
)
_PE_KEY = re.compile(r"^(?P<block>transformer_blocks\.\d+)\.attention_blocks\.[01]\.pos_encoder\.pe$")


def build_motion_adapter(
    block_out_channels: Sequence[int],
    motion_layers_per_block: int = 2,
    num_attention_heads: int = 8,
    max_seq_length: int = 32,
    use_mid_block: bool = True,
    norm_num_groups: int = 32,
) -> MotionAdapter:
    """Randomly initialised AnimateDiff motion adapter matching a UNet with `block_out_channels`."""
    return MotionAdapter(
        block_out_channels=tuple(block_out_channels),
        motion_layers_per_block=motion_layers_per_block,
        motion_num_attention_heads=num_attention_heads,
        motion_max_seq_length=max_seq_length,
        use_motion_mid_block=use_mid_block,
        motion_norm_num_groups=norm_num_groups,
    )


class PerFrameGroupNorm(torch.nn.GroupNorm):
    """GroupNorm of each frame of a `b c f h w` input on its own, as original AnimateDiff's `(b f) c h w` norm.

    Same parameters as the nn.GroupNorm it replaces, so checkpoints load unchanged; 4-D inputs are plain frames.
    """

    @classmethod
    def from_group_norm(cls, norm: torch.nn.GroupNorm) -> PerFrameGroupNorm:
        new = cls(norm.num_groups, norm.num_channels, eps=norm.eps, affine=norm.affine, device="meta")
        new.weight, new.bias = norm.weight, norm.bias
        return new

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 4:
            return super().forward(x)
        if x.ndim != 5:
            raise ValueError(f"PerFrameGroupNorm expects (b, c, f, h, w) or (n, c, h, w), got {tuple(x.shape)}.")
        frames = x.transpose(1, 2).flatten(0, 1)
        out = F.group_norm(frames, self.num_groups, self.weight, self.bias, self.eps)
        return out.unflatten(0, (x.shape[0], x.shape[2])).transpose(1, 2)


def convert_original_motion_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Original AnimateDiff names -> diffusers MotionAdapter names.

    `X.motion_modules.i.temporal_transformer.REST` -> `X.motion_modules.i.REST`, and inside REST:
    attention_blocks.0/1 -> attn1/attn2, norms.0/1 -> norm1/norm2, ff_norm -> norm3. Each original attention
    block carries its own copy of the sinusoidal table (`attention_blocks.{0,1}.pos_encoder.pe`); diffusers
    has one per transformer block (`pos_embed.pe`, used before both attentions), so the two copies must be
    equal and become that one. Keys outside this layout raise WeightLoadError naming them.
    """
    converted: dict[str, torch.Tensor] = {}
    unknown = []
    for key, value in state_dict.items():
        match = _ORIGINAL_KEY.match(key)
        if match is None:
            unknown.append(key)
            continue
        prefix, rest = match["prefix"], match["rest"]
        pe = _PE_KEY.match(rest)
        if pe is not None:
            new_key = f"{prefix}.{pe['block']}.pos_embed.pe"
            if new_key in converted and not value.is_meta and not torch.equal(converted[new_key], value):
                raise WeightLoadError(f"{key}: the two attention blocks' pos_encoder.pe tables differ.")
            converted[new_key] = value
            continue
        rest = f".{rest}"
        for pattern, replacement in _BLOCK_RENAMES:
            rest = pattern.sub(replacement, rest)
        converted[f"{prefix}{rest}"] = value
    if unknown:
        shown = ", ".join(sorted(unknown)[:20])
        raise WeightLoadError(
            f"Unexpected keys for an original AnimateDiff motion-module checkpoint ({len(unknown)} in total): {shown}"
        )
    return converted


def _indices(keys: list[str], pattern: str) -> list[int]:
    regex = re.compile(pattern)
    return sorted({int(m.group(1)) for k in keys if (m := regex.match(k))})


def infer_motion_adapter_config(
    state_dict: dict[str, torch.Tensor],
    num_attention_heads: int = 8,
    norm_num_groups: int = 32,
    max_seq_length: int = 32,
) -> dict:
    """MotionAdapter kwargs from a diffusers-named motion state dict (heads and groups are not in the shapes)."""
    keys = list(state_dict)
    down = _indices(keys, r"^down_blocks\.(\d+)\.")
    if not down:
        raise WeightLoadError(
            "No down_blocks.* motion modules in the checkpoint; it is not a motion adapter."
        )
    channels, layers, transformer_layers = [], [], []
    for i in down:
        modules = _indices(keys, rf"^down_blocks\.{i}\.motion_modules\.(\d+)\.")
        channels.append(int(state_dict[f"down_blocks.{i}.motion_modules.0.norm.weight"].shape[0]))
        layers.append(len(modules))
        transformer_layers.append(
            len(_indices(keys, rf"^down_blocks\.{i}\.motion_modules\.0\.transformer_blocks\.(\d+)\."))
        )
    mid_modules = _indices(keys, r"^mid_block\.motion_modules\.(\d+)\.")
    pe = [v for k, v in state_dict.items() if k.endswith("pos_embed.pe")]
    config = {
        "block_out_channels": tuple(channels),
        "motion_layers_per_block": layers[0] if len(set(layers)) == 1 else tuple(layers),
        "motion_transformer_layers_per_block": (
            transformer_layers[0] if len(set(transformer_layers)) == 1 else tuple(transformer_layers)
        ),
        "motion_num_attention_heads": num_attention_heads,
        "motion_norm_num_groups": norm_num_groups,
        "motion_max_seq_length": int(pe[0].shape[1]) if pe else max_seq_length,
        "use_motion_mid_block": bool(mid_modules),
    }
    if mid_modules:
        config["motion_mid_block_layers_per_block"] = len(mid_modules)
        config["motion_transformer_layers_per_mid_block"] = len(
            _indices(keys, r"^mid_block\.motion_modules\.0\.transformer_blocks\.(\d+)\.")
        )
    return config


def load_motion_adapter(
    path: str | Path,
    num_attention_heads: int = 8,
    norm_num_groups: int = 32,
    max_seq_length: int = 32,
    config_key: str = "model.motion_adapter.path",
) -> MotionAdapter:
    """MotionAdapter from a diffusers folder, or from an original AnimateDiff .ckpt/.pt/.safetensors file.

    For original files the config is inferred from the shapes (heads/groups are arguments: 8 and 32 in every
    AnimateDiff release). The adapter is marked as pretrained (`adapter.pretrained_from`), so stage 2 keeps its
    output projections by default (see `to_motion_unet`).
    """
    path = require_file(path, config_key, MOTION_PUBLISHED_AT)
    if path.is_dir():
        adapter = load_diffusers_model(MotionAdapter, path, config_key, MOTION_PUBLISHED_AT)
    else:
        adapter = motion_adapter_from_original(
            load_state_dict_file(path), str(path), num_attention_heads, norm_num_groups, max_seq_length
        )
    adapter.pretrained_from = str(path)
    return adapter


def motion_adapter_from_original(
    state_dict: dict[str, torch.Tensor],
    source: str,
    num_attention_heads: int = 8,
    norm_num_groups: int = 32,
    max_seq_length: int = 32,
    dtype: torch.dtype = torch.float32,
) -> MotionAdapter:
    """A MotionAdapter (in `dtype`) strictly loaded from an original-layout (AnimateDiff / Moore) motion state dict.

    The stored sinusoidal tables must agree with diffusers' own formula; a dict without them gets diffusers'
    (they are a constant, not learned) with `max_seq_length` frames. Meta tensors give a meta adapter.
    """
    state_dict = convert_original_motion_state_dict(state_dict)
    config = infer_motion_adapter_config(state_dict, num_attention_heads, norm_num_groups, max_seq_length)
    meta = any(v.is_meta for v in state_dict.values())
    with torch.device("meta" if meta else "cpu"):
        adapter = MotionAdapter(**config).to(dtype)
    reference = adapter.state_dict()
    for key, value in reference.items():
        if not key.endswith("pos_embed.pe"):
            continue
        if key not in state_dict:
            state_dict[key] = value.clone()
        elif state_dict[key].shape == value.shape and not meta:
            diff = (state_dict[key].float() - value.float()).abs().max().item()
            if diff > _PE_TOLERANCE:
                raise WeightLoadError(
                    f"{source}: {key} differs from diffusers' sinusoidal table by {diff:.3g}; the checkpoint uses a "
                    "different positional encoding than diffusers' MotionAdapter."
                )
    load_strict(adapter, state_dict, source=source)
    return adapter


@contextlib.contextmanager
def _construction_dtype(dtype: torch.dtype):
    """from_unet2d builds in the default dtype, copies the weights in, then casts: for a float64 UNet the copy
    would round every weight to float32, so build in float64 then (lower dtypes round-trip through float32)."""
    if dtype != torch.float64:
        yield
        return
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def to_motion_unet(
    unet2d: UNet2DConditionModel,
    adapter: MotionAdapter,
    zero_proj_out: str | bool = "fresh",
    norm: str = "per_frame",
) -> UNetMotionModel:
    """Inflate a 2D UNet with motion modules (diffusers' from_unet2d), on the 2D UNet's device and dtype.

    zero_proj_out: "fresh" (default) zeroes every motion module's output projection only when the adapter was
    freshly initialised, so the motion UNet starts equal to the 2D UNet applied frame by frame (AnimateDiff's
    zero_initialize) and pretrained motion modules (`load_motion_adapter`) run as trained: zeroing them would
    discard their behaviour and pass no gradient to their inner layers until proj_out has grown. "always"
    zeroes pretrained ones too: stage 2 then starts exactly at the stage-1 model (Moore loads mm_sd_v15_v2
    unzeroed, and its issue #110 reports noisy samples at the start of stage 2). "never" keeps any init.
    True/False are read as "always"/"never". norm: see the module docstring.
    """
    zero_proj_out = {True: "always", False: "never"}.get(zero_proj_out, zero_proj_out)
    if zero_proj_out not in ZERO_PROJ_OUT:
        raise ValueError(f"zero_motion_proj_out={zero_proj_out!r} is not one of {ZERO_PROJ_OUT} (or true/false).")
    if norm not in MOTION_NORMS:
        raise ValueError(f"motion_norm={norm!r} is not one of {MOTION_NORMS}.")
    unet_groups = unet2d.config.norm_num_groups
    adapter_groups = adapter.config.motion_norm_num_groups
    if unet_groups != adapter_groups:
        raise ValueError(
            f"MotionAdapter motion_norm_num_groups={adapter_groups} but the UNet has norm_num_groups={unet_groups}; "
            "UNetMotionModel builds its motion modules with the UNet's value, so the adapter's would be ignored. "
            "Build the adapter with the UNet's norm_num_groups."
        )
    device = unet2d.device
    with torch.device("meta" if device.type == "meta" else "cpu"), _construction_dtype(unet2d.dtype):
        motion = UNetMotionModel.from_unet2d(unet2d, adapter)  # in the 2D UNet's dtype
    motion.to(device=device)
    pretrained = getattr(adapter, "pretrained_from", None) is not None
    zero = zero_proj_out == "always" or (zero_proj_out == "fresh" and not pretrained)
    for name, module in motion.named_modules():
        if isinstance(module, AnimateDiffTransformer3D) and "motion_modules" in name:
            if norm == "per_frame":
                module.norm = PerFrameGroupNorm.from_group_norm(module.norm)
            if zero:
                with torch.no_grad():
                    module.proj_out.weight.zero_()
                    module.proj_out.bias.zero_()
    return motion


def motion_parameter_names(unet: torch.nn.Module) -> list[str]:
    """Names of the motion-module parameters (the only ones trained in stage 2)."""
    return [name for name, _ in unet.named_parameters() if "motion_modules" in name]
