"""Dropout whose mask is each training sample's own: a function of (seed, global sample index, layer name).

Why: `nn.Dropout` draws from torch's global RNG, so a sample's mask depends on which samples share its batch,
its rank and the world size; 2 ranks x batch 1 then cannot train like 1 process x batch 2. `KeyedDropout` draws
its masks from the project's one randomness scheme (src.trainers.sample_draws): the trainer binds the step's
`SampleDraws` to every keyed layer (`bind_dropout_draws`) before the forward, and each layer draws under the
purpose "dropout/<its module name>", so layers never share a stream.

Frames or tokens folded into the batch (`(b t) c h w`, sample-major as einops' "(b t)") are fine: the first
dimension is split into the bound batch's `b` samples and sample i's mask covers its whole `x[i*k:(i+1)*k]`.
`masks="global"` (model.dropout_masks) draws from torch's global RNG instead, as nn.Dropout does: faster (one
kernel, no Threefry rounds) but batch-dependent, so it gives up the any-world-size guarantee.
In eval mode, or at p = 0, it is the identity (same as nn.Dropout), so released weights infer unchanged.
Activation checkpointing recomputes the same mask (it is a function of the keys, not of RNG state).
"""

from __future__ import annotations

from typing import Protocol

import torch
from torch import nn


class MaskDraws(Protocol):
    """What keyed dropout needs of the training draws (src.trainers.sample_draws.SampleDraws, which models may
    not import): the batch's sample count and per-sample keep masks."""

    batch_size: int

    def keep_mask(self, purpose: str, count: int, p: float) -> tuple[torch.Tensor, float]: ...


__all__ = ["DROPOUT_MASKS", "KeyedDropout", "MaskDraws", "bind_dropout_draws"]

DROPOUT_MASKS = ("keyed", "global")


class KeyedDropout(nn.Module):
    """Inverted dropout with per-sample keyed masks; no parameters, so swapping it for nn.Dropout keeps the
    state-dict layout (Sequential indices) of official checkpoints."""

    def __init__(self, p: float = 0.5) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout probability must be in [0, 1), got {p}.")
        self.p = float(p)
        self.draws: MaskDraws | None = None
        self.purpose = "dropout"
        self.keyed = True  # False: torch's global RNG (model.dropout_masks=global)

    def extra_repr(self) -> str:
        return f"p={self.p}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        if not self.keyed:
            return nn.functional.dropout(x, self.p, training=True)
        if self.draws is None:
            raise RuntimeError(
                f"KeyedDropout {self.purpose!r} runs in training mode with p={self.p} but no per-sample draws are "
                "bound: call src.models.keyed_dropout.bind_dropout_draws(net, draws) with the step's SampleDraws "
                "before the forward (the trainers do), or put the network in eval mode."
            )
        b = self.draws.batch_size
        if x.shape[0] % b:
            raise ValueError(
                f"KeyedDropout {self.purpose!r}: input batch dimension {x.shape[0]} is not a multiple of the bound "
                f"{b} samples; bind the draws of the batch this forward runs on."
            )
        keep, scale = self.draws.keep_mask(self.purpose, x.numel() // b, self.p)
        return x * (keep.view(x.shape).to(x.dtype) * scale)


def bind_dropout_draws(root: nn.Module, draws: MaskDraws | None, masks: str = "keyed") -> int:
    """Give every KeyedDropout under `root` this step's draws (None unbinds) and its purpose, the layer's module
    name, and the mask source (`masks`: keyed | global); returns how many layers were bound."""
    if masks not in DROPOUT_MASKS:
        raise ValueError(f"dropout masks={masks!r} is not one of {DROPOUT_MASKS} (model.dropout_masks)")
    count = 0
    for name, module in root.named_modules():
        if isinstance(module, KeyedDropout):
            module.draws, module.purpose, module.keyed = draws, f"dropout/{name}", masks == "keyed"
            count += 1
    return count
