"""Classifier-free guidance on model outputs, joint or with separate image/text scales, plus guidance rescale.

The model is called once on a batch holding every branch, stacked in `Guidance.branches` order: "cond" (all
conditions), "image" (image only: empty text + image; only with separate scales), "uncond" (nothing). Joint:
u + s (c - u); separate (DynamiCrafter's multi-condition CFG): u + s_img (i - u) + s (c - i). Guidance rescale
(Lin et al. 2024, sec. 3.4) mixes in the guided output rescaled to the conditional output's std per sample.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


def rescale_guidance(guided: torch.Tensor, cond: torch.Tensor, rescale: float) -> torch.Tensor:
    """``rescale * guided * std(cond) / std(guided) + (1 - rescale) * guided`` (std per sample over c t h w)."""
    if rescale <= 0:
        return guided
    dims = tuple(range(1, cond.ndim))
    std_cond = cond.std(dim=dims, keepdim=True)
    std_guided = guided.std(dim=dims, keepdim=True)
    return rescale * guided * (std_cond / std_guided.clamp(min=1e-12)) + (1.0 - rescale) * guided


def combine_guidance(
    cond: torch.Tensor,
    uncond: torch.Tensor,
    scale: float,
    image_only: torch.Tensor | None = None,
    image_scale: float | None = None,
    rescale: float = 0.0,
) -> torch.Tensor:
    """Guided output from the branch outputs; ``image_only`` (empty text + image) enables separate scales."""
    if image_only is None:
        guided = uncond + scale * (cond - uncond)
    else:
        if image_scale is None:
            raise ValueError("combine_guidance: image_only was given without image_scale.")
        guided = uncond + image_scale * (image_only - uncond) + scale * (cond - image_only)
    return rescale_guidance(guided, cond, rescale)


@dataclass(frozen=True)
class Guidance:
    """Guidance settings: `scale` (text or joint), `image_scale` (None = joint), `rescale` (0 = off).

    With `scale` 1 and no image scale the unconditional branch contributes nothing and is not computed.
    """

    scale: float = 1.0
    image_scale: float | None = None
    rescale: float = 0.0

    @property
    def branches(self) -> tuple[str, ...]:
        if self.image_scale is not None:
            return ("cond", "image", "uncond")
        if self.scale != 1.0:
            return ("cond", "uncond")
        return ("cond",)

    def combine(self, stacked: torch.Tensor) -> torch.Tensor:
        """`(k*b) ...` outputs of the k branches, stacked in `branches` order -> guided `b ...` output."""
        k = len(self.branches)
        if k == 1:
            return stacked
        outputs = stacked.chunk(k)
        return combine_guidance(
            outputs[0],
            outputs[-1],
            self.scale,
            image_only=outputs[1] if k == 3 else None,
            image_scale=self.image_scale,
            rescale=self.rescale,
        )
