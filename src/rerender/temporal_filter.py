"""Flow-guided temporal smoothing of a propagated video: each non-key frame is mixed with its neighbours'
results carried onto it by the input video's flow, on the pixels that flow keeps visible, in a forward and a
backward recursive pass (averaged, so neither direction lags). Key frames are left as given. It removes the
frame-to-frame flicker that per-frame patch synthesis leaves where content was re-synthesised. Videos
`t 3 h w` float in [0, 1]."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor

from src.rerender.flow import PairFlows, warp

__all__ = ["temporal_filter"]


def temporal_filter(video: Tensor, pairs: PairFlows, keys: Iterable[int], strength: float = 0.5) -> Tensor:
    """`strength` in [0, 1): the weight of the carried neighbour in each recursive step (0 = unchanged)."""
    if not 0.0 <= strength < 1.0:
        raise ValueError(f"rerender.propagation.temporal_smoothing must be in [0, 1), got {strength}")
    if strength == 0.0:
        return video
    fixed = set(keys)
    t = video.shape[0]

    def sweep(order: list[int], forward: bool) -> Tensor:
        out = video.clone()
        for prev, j in zip(order[:-1], order[1:]):
            if j in fixed:
                continue
            if forward:  # j -> j-1 is the backward flow of pair j-1
                flow, visible = pairs.backward[prev : prev + 1], pairs.backward_valid[prev : prev + 1]
            else:
                flow, visible = pairs.forward[j : j + 1], pairs.forward_valid[j : j + 1]
            carried = warp(out[prev][None], flow)[0]
            mixed = (1 - strength) * video[j] + strength * carried
            out[j] = torch.where(visible[0], mixed, video[j])
        return out

    return 0.5 * (sweep(list(range(t)), True) + sweep(list(range(t - 1, -1, -1)), False))
