"""Rerender's cross-frame attention as a diffusers attention processor on the UNet decoder's self-attention.

While the anchor frame is denoised, every decoder (`up_blocks`) self-attention layer (`attn1`) records its input
hidden states per step; later key frames attend with queries from their own tokens and keys/values from
[anchor tokens; previous key frame tokens] recorded at the same step and layer (paper Eq. 6: the current frame's
own tokens are not among the keys, as in the official code). Processors are installed with
`unet.set_attn_processor`, never by patching forwards; the ControlNet branch keeps its own attention. Stored
features are kept in `store_dtype` (half precision by default) on the UNet's device: at 512x512 with batched CFG
that is ~14 MB per UNet call and store instead of ~28 MB in float32.

`loose_cfattn` (official option, WebUI default) leaves the widest decoder attention layers (SD1.5's 1280-channel
`up_blocks.1`) as plain self-attention. The attention itself is diffusers' SDPA processor, given the stored
context as `encoder_hidden_states`.
"""

from __future__ import annotations

import torch
from diffusers.models.attention_processor import AttnProcessor2_0

__all__ = ["CrossFrameAttnProcessor", "CrossFrameStore", "install_cross_frame_attention"]

MODES = ("off", "record", "attend")


class CrossFrameStore:
    """The recorded decoder features shared by all processors, and what the current UNet call does with them.

    mode "off": plain self-attention. "record" (the anchor): remember each layer's input as both the anchor's and
    the previous key frame's features. "attend": at active steps, K/V from [anchor; previous]; with
    `update_previous`, the current frame's features replace the previous key frame's (the style update).
    `step` and `active` are set per denoising step by `CrossFrameStepHook`.
    """

    def __init__(self, store_dtype: torch.dtype = torch.float16) -> None:
        self.store_dtype = store_dtype
        self.mode = "off"
        self.update_previous = False
        self.step = 0
        self.active = True
        self.anchor: dict[tuple[int, str], torch.Tensor] = {}
        self.previous: dict[tuple[int, str], torch.Tensor] = {}

    def set_mode(self, mode: str, update_previous: bool = False) -> None:
        if mode not in MODES:
            raise ValueError(f"cross-frame attention mode must be one of {MODES}, got {mode!r}")
        if mode == "record":
            self.anchor.clear()
            self.previous.clear()
        self.mode, self.update_previous = mode, update_previous

    def context(self, layer: str, hidden_states: torch.Tensor) -> torch.Tensor | None:
        """The K/V source for `layer` at the current step; None = plain self-attention."""
        if self.mode == "off" or not self.active:
            return None
        key = (self.step, layer)
        if self.mode == "record":
            self.anchor[key] = self.previous[key] = hidden_states.detach().to(self.store_dtype)
            return None
        if key not in self.anchor:
            raise RuntimeError(
                f"cross-frame attention: nothing recorded for step {self.step} of layer {layer}; the anchor frame must "
                "be denoised with the same steps, start step and cross-attention window before later key frames"
            )
        stored = torch.cat([self.anchor[key], self.previous[key]], dim=1).to(hidden_states.dtype)
        if stored.shape[0] != hidden_states.shape[0]:
            raise RuntimeError(
                f"cross-frame attention: recorded batch {stored.shape[0]} != current batch {hidden_states.shape[0]} "
                f"at layer {layer}; key frames must use the anchor's guidance branches"
            )
        if self.update_previous:
            self.previous[key] = hidden_states.detach().to(self.store_dtype)
        return stored

    def nbytes(self) -> int:
        """Bytes held by the recorded features (anchor and previous may share tensors)."""
        seen = {id(t): t for t in [*self.anchor.values(), *self.previous.values()]}
        return sum(t.numel() * t.element_size() for t in seen.values())


class CrossFrameAttnProcessor:
    """Self-attention whose keys/values come from the store's context for this layer (when it gives one)."""

    def __init__(self, store: CrossFrameStore, layer: str) -> None:
        self.store, self.layer = store, layer
        self.attention = AttnProcessor2_0()

    def __call__(
        self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kwargs
    ):
        if encoder_hidden_states is not None:
            raise ValueError(
                f"{self.layer}: cross-frame attention belongs on self-attention (attn1) layers only"
            )
        context = self.store.context(self.layer, hidden_states)
        return self.attention(attn, hidden_states, context, attention_mask, temb)


def decoder_self_attention_layers(unet, loose: bool = False) -> list[str]:
    """Processor names of the decoder's self-attention layers (`up_blocks.*.attn1`); `loose` drops the widest."""
    names = [n for n in unet.attn_processors if n.startswith("up_blocks.") and ".attn1." in n]
    if not names:
        raise ValueError(
            "the UNet has no decoder self-attention (up_blocks.*.attn1) layers for cross-frame attention"
        )
    if not loose:
        return names
    width = {n: unet.get_submodule(n.removesuffix(".processor")).to_q.in_features for n in names}
    widest = max(width.values())
    return [n for n in names if width[n] < widest]


def install_cross_frame_attention(unet, store: CrossFrameStore, loose: bool = False) -> list[str]:
    """Set cross-frame processors on the decoder self-attention layers (others keep theirs, or get plain SDPA back
    if an earlier install made them cross-frame); returns their names."""
    chosen = set(decoder_self_attention_layers(unet, loose))
    processors = {}
    for name, processor in unet.attn_processors.items():
        if name in chosen:
            processor = CrossFrameAttnProcessor(store, name.removesuffix(".processor"))
        elif isinstance(processor, CrossFrameAttnProcessor):  # installed before with other settings
            processor = AttnProcessor2_0()
        processors[name] = processor
    unet.set_attn_processor(processors)
    return sorted(chosen)
