"""ReferenceNet "reference attention" through diffusers attention processors (SDPA), no patched forwards.

The reference UNet runs on the reference image latent; at every spatial self-attention (`attn1` of each
`BasicTransformerBlock`) a `ReferenceWriteProcessor` stores the attention input, which is `norm1(x)`, in a
`ReferenceBank`. The denoising UNet's matching `attn1` uses a `ReferenceReadProcessor`: queries from the
frame tokens, keys/values from [frame tokens; reference tokens] along the token axis. That equals the
paper's "concatenate along width, self-attend, keep the first half", and Moore-AnimateAnyone's bank.

Layouts: bank entries are (B, L, C) tokens of the reference batch; the denoising UNet sees frames folded
into the batch, (B*T, N, C), b-major (sample 0's T frames first), as diffusers' UNetMotionModel folds them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers.models.attention import BasicTransformerBlock
from diffusers.models.attention_processor import Attention
from torch import nn

__all__ = [
    "ReferenceBank",
    "ReferenceWriteProcessor",
    "ReferenceReadProcessor",
    "attach_reference_attention",
    "spatial_self_attention_names",
    "unused_reference_parameter_names",
]


class ReferenceBank:
    """Reference tokens per attention-layer name, written by the reference UNet and read by the denoising UNet.

    `use_reference` (B,) bool: False marks unconditional samples, which attend to their own tokens only.
    After `seal()` writes are ignored, so recomputation under activation checkpointing (which re-runs the
    reference UNet's forward during backward) cannot overwrite the entries; `clear()` unseals.
    `dtype` (optional) stores the tokens in that precision (Moore keeps its bank in float16).
    """

    def __init__(self, dtype: torch.dtype | None = None) -> None:
        self.dtype = dtype
        self.entries: dict[str, torch.Tensor] = {}
        self._use_reference: torch.Tensor | None = None
        self._needs_mask = False
        self.sealed = False

    @property
    def use_reference(self) -> torch.Tensor | None:
        return self._use_reference

    @use_reference.setter
    def use_reference(self, value: torch.Tensor | None) -> None:
        """Validate the per-sample flags; any flags mean a mask (deciding from their values would need a host sync
        every step; callers whose flags are all True pass None, which keeps the unmasked fused kernels)."""
        if value is not None and (value.ndim != 1 or value.dtype != torch.bool):
            raise ValueError(
                f"use_reference must be a 1-D bool tensor (B,), got {value.dtype} {tuple(value.shape)}."
            )
        self._use_reference = value
        self._needs_mask = value is not None

    def set_use_reference(self, use_reference: torch.Tensor | None) -> None:
        self.use_reference = use_reference

    @property
    def needs_mask(self) -> bool:
        """True when some samples must not see their reference tokens."""
        return self._needs_mask

    @property
    def batch_size(self) -> int | None:
        """Batch of the written reference (B), or None for an empty bank."""
        return next(iter(self.entries.values())).shape[0] if self.entries else None

    def write(self, name: str, tokens: torch.Tensor) -> None:
        if not self.sealed:
            self.entries[name] = tokens if self.dtype is None else tokens.to(self.dtype)

    def seal(self) -> None:
        self.sealed = True

    def clear(self) -> None:
        self.entries = {}
        self.use_reference = None
        self.sealed = False

    def __len__(self) -> int:
        return len(self.entries)

    def __contains__(self, name: str) -> bool:
        return name in self.entries


def _heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """(N, L, heads*d) -> (N, heads, L, d)."""
    return x.unflatten(-1, (heads, -1)).transpose(1, 2)


def _self_attention_inputs(attn: Attention, hidden_states: torch.Tensor) -> tuple[torch.Tensor, int]:
    if attn.spatial_norm is not None or attn.group_norm is not None:
        raise NotImplementedError(
            "Reference attention processors do not support spatial_norm/group_norm attention."
        )
    if hidden_states.ndim != 3:
        raise ValueError(f"Reference attention expects tokens (N, L, C), got {tuple(hidden_states.shape)}.")
    return hidden_states, hidden_states.shape[0]


def _finish(
    attn: Attention,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    residual: torch.Tensor,
    attn_mask: torch.Tensor | None,
) -> torch.Tensor:
    """Head split, optional q/k norms, SDPA, output projection, residual/rescale, as AttnProcessor2_0 does."""
    query, key, value = _heads(query, attn.heads), _heads(key, attn.heads), _heads(value, attn.heads)
    if attn.norm_q is not None:
        query = attn.norm_q(query)
    if attn.norm_k is not None:
        key = attn.norm_k(key)
    out = F.scaled_dot_product_attention(
        query, key, value, attn_mask=attn_mask, dropout_p=0.0, is_causal=False
    )
    out = out.transpose(1, 2).flatten(2).to(query.dtype)
    out = attn.to_out[1](attn.to_out[0](out))
    if attn.residual_connection:
        out = out + residual
    return out / attn.rescale_output_factor


def _plain_self_attention(
    attn: Attention, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None
) -> torch.Tensor:
    x, batch = _self_attention_inputs(attn, hidden_states)
    mask = None
    if attention_mask is not None:
        mask = attn.prepare_attention_mask(attention_mask, x.shape[1], batch)
        mask = mask.view(batch, attn.heads, -1, mask.shape[-1])
    return _finish(attn, attn.to_q(x), attn.to_k(x), attn.to_v(x), hidden_states, mask)


def _check_self_attention(encoder_hidden_states: torch.Tensor | None, where: str) -> None:
    if encoder_hidden_states is not None:
        raise ValueError(
            f"{where} is set on a cross-attention call (encoder_hidden_states given); reference attention "
            "belongs on the self-attention `attn1` of BasicTransformerBlocks with only_cross_attention=False."
        )


class ReferenceWriteProcessor:
    """Reference UNet attn1: store the input tokens (= norm1(x)) in the bank, then plain SDPA self-attention."""

    def __init__(self, bank: ReferenceBank, name: str) -> None:
        self.bank = bank
        self.name = name

    def __call__(
        self,
        attn: Attention,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
    ) -> torch.Tensor:
        _check_self_attention(encoder_hidden_states, f"ReferenceWriteProcessor({self.name})")
        self.bank.write(self.name, hidden_states)
        return _plain_self_attention(attn, hidden_states, attention_mask)


class ReferenceReadProcessor:
    """Denoising UNet attn1: Q from frame tokens, K/V from [frame tokens; reference tokens of its sample].

    The bank entry (B, L, C) is projected once and repeated over the T frames of each sample when the
    call's batch is B*T. Samples with use_reference False get a boolean mask that hides the reference
    tokens (= plain self-attention); the mask is only built when needed so fused SDPA kernels stay usable.
    With no bank entry for this layer the call is exactly plain self-attention.
    """

    def __init__(self, bank: ReferenceBank, name: str) -> None:
        self.bank = bank
        self.name = name

    def __call__(
        self,
        attn: Attention,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
    ) -> torch.Tensor:
        _check_self_attention(encoder_hidden_states, f"ReferenceReadProcessor({self.name})")
        reference = self.bank.entries.get(self.name)
        if reference is None:
            return _plain_self_attention(attn, hidden_states, attention_mask)
        if attention_mask is not None:
            raise NotImplementedError(
                f"ReferenceReadProcessor({self.name}): an attention_mask on spatial self-attention is not supported "
                "together with reference tokens."
            )
        x, batch = _self_attention_inputs(attn, hidden_states)
        ref_batch = reference.shape[0]
        if batch % ref_batch or reference.shape[-1] != x.shape[-1]:
            raise ValueError(
                f"ReferenceReadProcessor({self.name}): frame tokens {tuple(x.shape)} do not match reference tokens "
                f"{tuple(reference.shape)}; the batch must be B*T for a bank written with batch B, and channels equal. "
                "Write the reference with the same batch (including the CFG halves) as the denoising call."
            )
        frames = batch // ref_batch
        reference = reference.to(x.dtype)
        ref_key = attn.to_k(reference).repeat_interleave(frames, dim=0)
        ref_value = attn.to_v(reference).repeat_interleave(frames, dim=0)
        key = torch.cat([attn.to_k(x), ref_key], dim=1)
        value = torch.cat([attn.to_v(x), ref_value], dim=1)
        mask = None
        if self.bank.needs_mask:
            use = self.bank.use_reference
            if use.shape[0] != ref_batch:
                raise ValueError(
                    f"bank.use_reference has {use.shape[0]} entries but the reference batch is {ref_batch}."
                )
            own = torch.ones(batch, x.shape[1], dtype=torch.bool, device=x.device)
            ref = use.to(x.device).repeat_interleave(frames)[:, None].expand(batch, reference.shape[1])
            mask = torch.cat([own, ref], dim=1)[:, None, None, :]
        return _finish(attn, attn.to_q(x), key, value, hidden_states, mask)


def spatial_self_attention_names(unet: nn.Module) -> list[str]:
    """Module paths of `attn1` of every spatial BasicTransformerBlock (motion modules' own blocks excluded)."""
    names = []
    for name, module in unet.named_modules():
        if not isinstance(module, BasicTransformerBlock) or "motion_modules" in name.split("."):
            continue
        if module.only_cross_attention:
            raise ValueError(
                f"{name}: only_cross_attention blocks have no self-attention to carry reference tokens."
            )
        names.append(f"{name}.attn1")
    return names


def attach_reference_attention(
    reference_unet: nn.Module, denoising_unet: nn.Module, bank: ReferenceBank
) -> list[str]:
    """Set write processors on the reference UNet and read processors on the denoising UNet; return the names.

    Layers are paired by module path (the two UNets share the SD layout), and the pairing must cover every
    spatial self-attention of both, with equal widths, otherwise this raises naming the unpaired layers.
    """
    ref_names = spatial_self_attention_names(reference_unet)
    den_names = spatial_self_attention_names(denoising_unet)
    if not ref_names:
        raise ValueError(
            "The reference UNet has no spatial self-attention layers (BasicTransformerBlock.attn1)."
        )
    only_ref = sorted(set(ref_names) - set(den_names))
    only_den = sorted(set(den_names) - set(ref_names))
    if only_ref or only_den:
        raise ValueError(
            "Reference and denoising UNets do not have the same spatial self-attention layers; build both from the "
            f"same UNet config. Only in reference UNet: {only_ref[:10]}; only in denoising UNet: {only_den[:10]}."
        )
    for name in ref_names:
        writer: Attention = reference_unet.get_submodule(name)
        reader: Attention = denoising_unet.get_submodule(name)
        if writer.to_q.in_features != reader.to_k.in_features:
            raise ValueError(
                f"{name}: reference width {writer.to_q.in_features} != denoising width {reader.to_k.in_features}."
            )
        writer.set_processor(ReferenceWriteProcessor(bank, name))
        reader.set_processor(ReferenceReadProcessor(bank, name))
    return ref_names


def _ordered_stages(unet: nn.Module) -> list[str]:
    """Submodule paths of a UNet2DConditionModel in forward execution order (blocks at resnet/attention grain)."""
    order: list[str] = []
    for i, block in enumerate(unet.down_blocks):
        attentions = getattr(block, "attentions", None)
        for j in range(len(block.resnets)):
            order.append(f"down_blocks.{i}.resnets.{j}")
            if attentions is not None:
                order.append(f"down_blocks.{i}.attentions.{j}")
        if getattr(block, "downsamplers", None) is not None:
            order.append(f"down_blocks.{i}.downsamplers")
    mid = unet.mid_block
    if mid is not None:
        order.append("mid_block.resnets.0")
        for j in range(len(getattr(mid, "attentions", []))):
            order.append(f"mid_block.attentions.{j}")
            order.append(f"mid_block.resnets.{j + 1}")
    for i, block in enumerate(unet.up_blocks):
        attentions = getattr(block, "attentions", None)
        for j in range(len(block.resnets)):
            order.append(f"up_blocks.{i}.resnets.{j}")
            if attentions is not None:
                order.append(f"up_blocks.{i}.attentions.{j}")
        if getattr(block, "upsamplers", None) is not None:
            order.append(f"up_blocks.{i}.upsamplers")
    for tail in ("conv_norm_out", "conv_act", "conv_out"):
        if getattr(unet, tail, None) is not None:
            order.append(tail)
    return order


def unused_reference_parameter_names(reference_unet: nn.Module) -> set[str]:
    """Parameters of a reference UNet2DConditionModel whose output never reaches a bank entry.

    Static rule: the bank is written at the input of the last transformer block's attn1, so that block's
    parameters other than norm1, its Transformer2DModel's proj_out, and every stage executed after that
    Transformer2DModel (later resnets/upsamplers, conv_norm_out, conv_out) are unused. Freezing them keeps
    DDP from waiting for gradients that never come (Moore freezes the whole up_blocks.3 for this reason).
    """
    order = _ordered_stages(reference_unet)
    attention_stages = [i for i, stage in enumerate(order) if ".attentions." in stage]
    if not attention_stages:
        raise ValueError(
            "The reference UNet has no attention stages, so nothing is ever written to the bank."
        )
    last = attention_stages[-1]
    last_transformer = order[last]
    blocks = reference_unet.get_submodule(last_transformer).transformer_blocks
    last_block = f"{last_transformer}.transformer_blocks.{len(blocks) - 1}."
    used_inside = (
        f"{last_transformer}.norm.",
        f"{last_transformer}.proj_in.",
        *(f"{last_transformer}.transformer_blocks.{k}." for k in range(len(blocks) - 1)),
        f"{last_block}norm1.",
        f"{last_block}pos_embed.",
    )
    after = tuple(f"{stage}." for stage in order[last + 1 :])
    unused = set()
    for name, _ in reference_unet.named_parameters():
        if name.startswith(after):
            unused.add(name)
        elif name.startswith(f"{last_transformer}.") and not name.startswith(used_inside):
            unused.add(name)
    return unused
