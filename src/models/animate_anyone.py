"""Animate Anyone networks: ReferenceNet + denoising UNet + Pose Guider in one trainable nn.Module.

Layouts: videos and latent videos `b c t h w`; reference latents `b c h w`; CLIP embeddings `b 1 d`;
pose videos `b 3 t H W` in [0, 1]. Inside, frames are folded into the batch b-major (`(b t) c h w`), the
way diffusers' UNetMotionModel folds them, so the reference bank (batch b) repeats over frames correctly.

Stage "spatial": the 2D denoising UNet runs on every frame independently. Stage "temporal" (after
`enable_temporal`): the denoising UNet is a UNetMotionModel with AnimateDiff motion modules.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from diffusers import MotionAdapter, UNet2DConditionModel, UNetMotionModel
from torch import nn

from src.models.motion import to_motion_unet
from src.models.pose_guider import PoseGuider
from src.models.reference_attention import (
    ReferenceBank,
    attach_reference_attention,
    unused_reference_parameter_names,
)
from src.models.weights import load_diffusers_model

__all__ = ["AnimateAnyoneNet", "PoseInjectedConv2d", "build_tiny_unet", "drop_reference_head", "load_unet"]

STAGES = ("spatial", "temporal")
UNET_PUBLISHED_AT = (
    "https://huggingface.co/lambdalabs/sd-image-variations-diffusers/tree/main/unet (what Moore-AnimateAnyone "
    "stage 1 starts both UNets from), or the `unet` folder of an SD 1.5 diffusers repo"
)


class PoseInjectedConv2d(nn.Conv2d):
    """The UNet's conv_in plus the pose features currently set on it (state-dict names stay conv_in.weight/bias).

    `AnimateAnyoneNet.denoise` sets the features right before the UNet call and clears them after, so a
    UNet used without them behaves exactly like the original.
    """

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__(
            conv.in_channels,
            conv.out_channels,
            kernel_size=conv.kernel_size,
            stride=conv.stride,
            padding=conv.padding,
            dilation=conv.dilation,
            groups=conv.groups,
            bias=conv.bias is not None,
            padding_mode=conv.padding_mode,
            device="meta",
        )
        self.weight = conv.weight
        self.bias = conv.bias
        self.features: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = super().forward(x)
        if self.features is None:
            return out
        if self.features.shape != out.shape:
            raise ValueError(
                f"Pose features {tuple(self.features.shape)} do not match the UNet conv_in output {tuple(out.shape)}; "
                "the pose guider's out_channels must be the UNet's first block width and its downsample factor "
                "must equal the latent codec's."
            )
        return out + self.features.to(out.dtype)


REFERENCE_INITS = ("own", "copy_denoising")
BANK_DTYPES = {None: None, "float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def drop_reference_head(unet: UNet2DConditionModel) -> UNet2DConditionModel:
    """Remove the reference UNet's output head (conv_norm_out, conv_out): its output is never used.

    Moore-AnimateAnyone's reference UNet has no such layers (its reference_unet.pth lacks their 4 keys), so
    dropping them lets that file load strictly; conv_out becomes an Identity so diffusers' forward still runs.
    """
    unet.conv_norm_out = None
    unet.conv_act = None
    unet.conv_out = nn.Identity()
    return unet


def copy_unet_weights(source: UNet2DConditionModel, into: UNet2DConditionModel) -> None:
    """`into` := `source`'s weights, strictly (the two UNets must share a configuration)."""
    try:
        into.load_state_dict(source.state_dict(), strict=True)
    except RuntimeError as err:
        raise ValueError(
            "model.net.reference_init=copy_denoising needs the reference and denoising UNets to have the same "
            f"configuration: {err}"
        ) from err


class AnimateAnyoneNet(nn.Module):
    """Everything trainable: reference_unet, denoising_unet, pose_guider (one module for DDP/DeepSpeed).

    `reference_init`: "own" keeps each UNet as built or loaded (with pretrained weights both load SD, as in
    the paper); "copy_denoising" starts the ReferenceNet from the denoising UNet's weights, which gives a
    from-scratch model the paper's starting point: reference and frame features in the same space.
    The reference UNet's unused output head is dropped (`drop_reference_head`).

    `bank_dtype`: None keeps the reference tokens in the UNet's dtype; "float16" rounds them as Moore does by
    default (its `ReferenceAttentionControl.update(dtype=torch.float16)`), halving the bank's memory.
    `freeze_reference_last_up_block`: also freeze the reference UNet's whole last up block in stage 1, as
    Moore does (`up_blocks.3`); by default only parameters with no path to the bank are frozen.
    `weights_origin` names where the weights came from ("moore" for `src.models.moore.load_moore_net`), so
    training and sampling can default to the conventions those weights were trained with.
    """

    def __init__(
        self,
        reference_unet: UNet2DConditionModel,
        denoising_unet: UNet2DConditionModel,
        pose_guider: PoseGuider,
        reference_init: str = "own",
        bank_dtype: str | None = None,
        freeze_reference_last_up_block: bool = False,
        weights_origin: str | None = None,
    ) -> None:
        super().__init__()
        if reference_init not in REFERENCE_INITS:
            raise ValueError(f"model.net.reference_init={reference_init!r} is not one of {REFERENCE_INITS}.")
        if bank_dtype not in BANK_DTYPES:
            raise ValueError(f"model.net.bank_dtype={bank_dtype!r} is not one of {list(BANK_DTYPES)}.")
        if reference_init == "copy_denoising":
            copy_unet_weights(denoising_unet, into=reference_unet)
        self.reference_unet = drop_reference_head(reference_unet)
        self.denoising_unet: UNet2DConditionModel | UNetMotionModel = denoising_unet
        self.pose_guider = pose_guider
        self.freeze_reference_last_up_block = freeze_reference_last_up_block
        self.weights_origin = weights_origin
        self.bank = ReferenceBank(dtype=BANK_DTYPES[bank_dtype])
        self._gradient_checkpointing = False
        self._check_pose_guider()
        if pose_guider.injection == "conv_in":
            self._wrap_conv_in(denoising_unet)
        self.reference_layers = attach_reference_attention(reference_unet, denoising_unet, self.bank)

    # ------------------------------------------------------------------------------------------ setup
    def _check_pose_guider(self) -> None:
        unet = self.denoising_unet
        if self.pose_guider.injection == "conv_in":
            expected, where = unet.conv_in.out_channels, "the UNet's conv_in output (first block width)"
        else:
            expected, where = unet.config.in_channels, "the UNet's latent input channels"
        if self.pose_guider.out_channels != expected:
            raise ValueError(
                f"PoseGuider(injection={self.pose_guider.injection!r}) has out_channels="
                f"{self.pose_guider.out_channels}, but {where} is {expected}; set the guider's out_channels to {expected}."
            )

    @staticmethod
    def _wrap_conv_in(unet: nn.Module) -> None:
        if not isinstance(unet.conv_in, PoseInjectedConv2d):
            unet.conv_in = PoseInjectedConv2d(unet.conv_in)

    @property
    def stage(self) -> str:
        """Current stage: spatial until enable_temporal() was called, then temporal."""
        return "temporal" if isinstance(self.denoising_unet, UNetMotionModel) else "spatial"

    def enable_temporal(
        self, adapter: MotionAdapter, zero_proj_out: str | bool = "fresh", norm: str = "per_frame"
    ) -> None:
        """Inflate the denoising UNet with motion modules (stage 2); re-attaches the reference processors.
        `zero_proj_out` and `norm`: see `src.models.motion.to_motion_unet`."""
        if self.stage == "temporal":
            raise RuntimeError("enable_temporal() was already called; the denoising UNet has motion modules.")
        motion = to_motion_unet(self.denoising_unet, adapter, zero_proj_out=zero_proj_out, norm=norm)
        if self.pose_guider.injection == "conv_in":
            self._wrap_conv_in(motion)
        if self._gradient_checkpointing:
            motion.enable_gradient_checkpointing()
        self.denoising_unet = motion
        self.reference_layers = attach_reference_attention(self.reference_unet, motion, self.bank)

    def enable_gradient_checkpointing(self) -> None:
        """Activation checkpointing in both UNets (kept on for the motion UNet created later)."""
        self._gradient_checkpointing = True
        self.reference_unet.enable_gradient_checkpointing()
        self.denoising_unet.enable_gradient_checkpointing()

    def set_trainable(self, stage: str) -> None:
        """spatial: denoising UNet (minus motion modules), reference UNet minus its unused tail (and minus its
        last up block with freeze_reference_last_up_block), pose guider.
        temporal: only the motion modules. Everything else gets requires_grad False."""
        if stage not in STAGES:
            raise ValueError(f"stage must be one of {STAGES}, got {stage!r}.")
        self.requires_grad_(False)
        if stage == "spatial":
            for name, param in self.denoising_unet.named_parameters():
                param.requires_grad_("motion_modules" not in name)
            unused = unused_reference_parameter_names(self.reference_unet)
            last_up = f"up_blocks.{len(self.reference_unet.up_blocks) - 1}."
            for name, param in self.reference_unet.named_parameters():
                frozen = name in unused or (self.freeze_reference_last_up_block and name.startswith(last_up))
                param.requires_grad_(not frozen)
            self.pose_guider.requires_grad_(True)
        else:
            if self.stage != "temporal":
                raise RuntimeError(
                    "set_trainable('temporal') needs motion modules: call enable_temporal(adapter) first."
                )
            for name, param in self.denoising_unet.named_parameters():
                param.requires_grad_("motion_modules" in name)

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    # ------------------------------------------------------------------------------------------ compute
    def encode_pose(self, pose: torch.Tensor) -> torch.Tensor:
        """pose (B, 3, T, H, W) in [0, 1] -> guider features (B, C', T, H/f, W/f); reusable across sampling steps."""
        if pose.ndim != 5:
            raise ValueError(f"encode_pose expects pose videos (B, 3, T, H, W), got {tuple(pose.shape)}.")
        b, _, t = pose.shape[:3]
        param = next(self.pose_guider.parameters())
        features = self.pose_guider(_fold(pose).to(param.dtype))
        return _unfold(features, b, t)

    def write_reference(
        self,
        reference_latents: torch.Tensor,
        clip_embeds: torch.Tensor,
        use_reference: torch.Tensor | None = None,
    ) -> None:
        """Run the reference UNet at timestep 0 on (B, C, h, w) latents and fill the bank (replacing its content)."""
        if reference_latents.ndim != 4:
            raise ValueError(f"reference_latents must be (B, C, h, w), got {tuple(reference_latents.shape)}.")
        b = reference_latents.shape[0]
        _check_clip(clip_embeds, b)
        if use_reference is not None and use_reference.shape != (b,):
            raise ValueError(f"use_reference must have shape ({b},), got {tuple(use_reference.shape)}.")
        self.bank.clear()
        self.bank.set_use_reference(use_reference)
        timesteps = torch.zeros(b, dtype=torch.long, device=reference_latents.device)
        dtype = self.reference_unet.dtype
        self.reference_unet(
            reference_latents.to(dtype), timesteps, encoder_hidden_states=clip_embeds.to(dtype)
        )
        if len(self.bank) != len(self.reference_layers):
            raise RuntimeError(
                f"The reference UNet wrote {len(self.bank)} of {len(self.reference_layers)} bank entries; its attention "
                "processors were replaced after AnimateAnyoneNet was built."
            )
        self.bank.seal()

    def clear_reference(self) -> None:
        self.bank.clear()

    def denoise(
        self,
        noisy_latents: torch.Tensor,
        timesteps: torch.Tensor,
        clip_embeds: torch.Tensor,
        pose_features: torch.Tensor,
    ) -> torch.Tensor:
        """(B, C, T, h, w) noisy latents -> (B, C, T, h, w) UNet output, reading the current reference bank."""
        if noisy_latents.ndim != 5:
            raise ValueError(f"noisy_latents must be (B, C, T, h, w), got {tuple(noisy_latents.shape)}.")
        b, _, t, h, w = noisy_latents.shape
        _check_clip(clip_embeds, b)
        if pose_features.ndim != 5 or pose_features.shape[0] != b or pose_features.shape[2:] != (t, h, w):
            raise ValueError(
                f"pose_features {tuple(pose_features.shape)} do not match the latents {tuple(noisy_latents.shape)}: "
                f"expected (B={b}, C', T={t}, h={h}, w={w}). The pose guider's downsample factor must equal the "
                "latent codec's, and pose must have as many frames as the latents."
            )
        if self.bank.batch_size not in (None, b):
            raise ValueError(
                f"The reference bank was written for batch {self.bank.batch_size} but denoise got batch {b}; call "
                "write_reference with the same batch as denoise (with classifier-free guidance, both halves)."
            )
        timesteps = timesteps.reshape(-1).expand(b) if timesteps.numel() == 1 else timesteps
        if timesteps.shape != (b,):
            raise ValueError(f"timesteps must have shape ({b},), got {tuple(timesteps.shape)}.")
        unet = self.denoising_unet
        dtype = unet.dtype
        context = clip_embeds.to(dtype).repeat_interleave(t, dim=0)
        if self.stage == "temporal":
            max_frames = unet.config.motion_max_seq_length
            if t > max_frames:
                raise ValueError(
                    f"{t} frames exceed the motion modules' motion_max_seq_length={max_frames}; sample in context "
                    "windows or use a motion adapter with a longer positional table."
                )
        sample = noisy_latents.to(dtype)
        if self.pose_guider.injection == "latent":
            sample = sample + pose_features.to(dtype)
        else:
            unet.conv_in.features = _fold(pose_features)
        try:
            if self.stage == "temporal":
                return unet(sample, timesteps, encoder_hidden_states=context).sample
            out = unet(_fold(sample), timesteps.repeat_interleave(t), encoder_hidden_states=context).sample
            return _unfold(out, b, t)
        finally:
            if self.pose_guider.injection == "conv_in":
                unet.conv_in.features = None

    def forward(
        self,
        noisy_latents: torch.Tensor,
        timesteps: torch.Tensor,
        clip_embeds: torch.Tensor,
        reference_latents: torch.Tensor,
        pose: torch.Tensor,
        use_reference: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Training call: write_reference + encode_pose + denoise, then clear the bank.

        With activation checkpointing on, the bank is kept until the next write_reference/clear_reference:
        the backward pass recomputes the denoising UNet's attention and must read the same reference tokens.
        """
        self.write_reference(reference_latents, clip_embeds, use_reference)
        try:
            return self.denoise(noisy_latents, timesteps, clip_embeds, self.encode_pose(pose))
        finally:
            if not self._gradient_checkpointing:
                self.clear_reference()


def _check_clip(clip_embeds: torch.Tensor, batch: int) -> None:
    if clip_embeds.ndim != 3 or clip_embeds.shape[0] != batch:
        raise ValueError(
            f"clip_embeds must be (B={batch}, tokens, D) (one projected CLIP token: (B, 1, D)), got {tuple(clip_embeds.shape)}."
        )


def _fold(video: torch.Tensor) -> torch.Tensor:
    """(B, C, T, H, W) -> (B*T, C, H, W), b-major."""
    return video.transpose(1, 2).flatten(0, 1)


def _unfold(frames: torch.Tensor, batch: int, num_frames: int) -> torch.Tensor:
    """(B*T, C, H, W) -> (B, C, T, H, W)."""
    return frames.unflatten(0, (batch, num_frames)).transpose(1, 2)


def build_tiny_unet(
    sample_size: int,
    in_channels: int,
    out_channels: int,
    block_out_channels: Sequence[int] = (32, 64),
    cross_attention_dim: int = 32,
    layers_per_block: int = 1,
    attention_head_dim: int = 8,
    norm_num_groups: int = 8,
    attention_levels: Sequence[bool] | None = None,
) -> UNet2DConditionModel:
    """A small random UNet2DConditionModel (tests and the CPU demo).

    `attention_head_dim` follows diffusers' SD naming, where it is the number of heads. `attention_levels`
    says per resolution level (highest first) whether its blocks have transformer blocks (self-, reference and
    cross-attention) or only ResNets, as SD1.5 has none at its lowest level; default: attention everywhere.
    The mid block always has one.
    """
    n = len(block_out_channels)
    levels = [True] * n if attention_levels is None else [bool(a) for a in attention_levels]
    if len(levels) != n:
        raise ValueError(
            f"attention_levels has {len(levels)} entries but block_out_channels has {n}: give one per level."
        )
    down = tuple("CrossAttnDownBlock2D" if a else "DownBlock2D" for a in levels)
    up = tuple("CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(levels))
    return UNet2DConditionModel(
        sample_size=sample_size,
        in_channels=in_channels,
        out_channels=out_channels,
        down_block_types=down,
        up_block_types=up,
        block_out_channels=tuple(block_out_channels),
        layers_per_block=layers_per_block,
        cross_attention_dim=cross_attention_dim,
        attention_head_dim=attention_head_dim,
        norm_num_groups=norm_num_groups,
    )


def load_unet(path: str | Path, config_key: str = "model.net.reference_unet.path") -> UNet2DConditionModel:
    """A UNet2DConditionModel from a local diffusers folder, loaded strictly (Hydra-friendly wrapper)."""
    return load_diffusers_model(UNet2DConditionModel, path, config_key, UNET_PUBLISHED_AT)
