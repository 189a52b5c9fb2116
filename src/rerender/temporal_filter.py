"""Flow-guided temporal smoothing of a propagated video: each non-key frame is mixed with its neighbours'
results carried onto it by the input video's flow, on the pixels that flow keeps visible, in recursive passes
over the video. Key frames are left as given. It removes the frame-to-frame flicker that per-frame patch
synthesis leaves where content was re-synthesised. Videos `t 3 h w` float in [0, 1].

One recursive pass lags behind the content it filters and is anchored only at the key it starts from: an
equal average of a forward and a backward pass (the first version) lagged the forward pass into the frame
next to the later key and jumped onto that key (at 96x128 the key-adjacent pairs carried most of the warp
error, and ours lost to the bidirectional warp blend). So each result here is a forward pass followed by a
backward pass over its output (zero lag, ends anchored at the later key), or the reverse (anchored at the
earlier key), and the two are mixed by the frame's position between its keys (`sweep_weights`)."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor

from src.rerender.flow import PairFlows, warp

__all__ = ["sweep_weights", "temporal_filter"]


def sweep_weights(t: int, keys: Iterable[int]) -> Tensor:
    """`t` weights of the result that ends with the backward pass: 0 on and after the last key, 1 before the
    first key (where only the other order is anchored), and (j - k0) / (k1 - k0) between keys k0 < j < k1."""
    order = sorted(set(keys))
    w = torch.zeros(t)
    if not order:
        return w.fill_(0.5)
    w[: order[0]] = 1.0
    for k0, k1 in zip(order[:-1], order[1:]):
        w[k0:k1] = torch.arange(k1 - k0, dtype=torch.float32) / (k1 - k0)
    return w


def temporal_filter(video: Tensor, pairs: PairFlows, keys: Iterable[int], strength: float = 0.5) -> Tensor:
    """`strength` in [0, 1): the weight of the carried neighbour in each recursive step (0 = unchanged)."""
    if not 0.0 <= strength < 1.0:
        raise ValueError(f"rerender.propagation.temporal_smoothing must be in [0, 1), got {strength}")
    if strength == 0.0:
        return video
    fixed = set(keys)
    t = video.shape[0]

    def sweep(order: list[int], forward: bool, source: Tensor) -> Tensor:
        out = source.clone()
        for prev, j in zip(order[:-1], order[1:]):
            if j in fixed:
                continue
            if forward:  # j -> j-1 is the backward flow of pair j-1
                flow, visible = pairs.backward[prev : prev + 1], pairs.backward_valid[prev : prev + 1]
            else:
                flow, visible = pairs.forward[j : j + 1], pairs.forward_valid[j : j + 1]
            carried = warp(out[prev][None], flow)[0]
            mixed = (1 - strength) * source[j] + strength * carried
            out[j] = torch.where(visible[0], mixed, source[j])
        return out

    w_later = sweep_weights(t, fixed).to(video)[:, None, None, None]
    fwd, bwd = list(range(t)), list(range(t - 1, -1, -1))
    ends_at_later = sweep(bwd, False, sweep(fwd, True, video))
    ends_at_earlier = sweep(fwd, True, sweep(bwd, False, video))
    return (1 - w_later) * ends_at_earlier + w_later * ends_at_later
