"""Flow from a key frame to an earlier reference frame (the anchor or the previous key frame) and its occlusion,
as the key-frame constraints need them: `flow` j -> ref, so ref's output warped by it lines up with frame j, and
`occlusion` of frame j from the forward-backward check (1 = no reliable match in ref). Frames `3 H W` in [0, 1];
results `1 2 H W` and `1 1 H W`, computed at the processing resolution through the flow interface."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from src.eval.flow_metrics import consistency_mask
from src.rerender.flow import FlowEstimator, warp

__all__ = ["KeyFlow", "key_flow"]


@dataclass
class KeyFlow:
    flow: torch.Tensor
    occlusion: torch.Tensor

    def warp(self, image: torch.Tensor) -> torch.Tensor:
        """The reference frame's `1 3 H W` image moved onto frame j (bilinear)."""
        return warp(image, self.flow.to(image.dtype))


@torch.no_grad()
def key_flow(flow: FlowEstimator, current: torch.Tensor, reference: torch.Tensor) -> KeyFlow:
    to_ref = flow(current[None], reference[None]).float()
    from_ref = flow(reference[None], current[None]).float()
    return KeyFlow(to_ref, 1 - consistency_mask(to_ref, from_ref).float())
