"""The simple propagations the demo scores ours against: copy the nearest key, flow-warp the previous key,
and flow-warp both neighbouring keys blended linearly by distance (which the research note found as good
as the real Ebsynth on PSNR and steadier). Warps use the same chained flows as the propagation (one
bilinear sample of the key). Frames `t 3 h w` float in [0, 1]; keys `{index: 3 h w}`."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from src.rerender.flow import PairFlows, chain_to_key, warp

__all__ = ["BASELINES", "bidirectional_warp_blend", "nearest_key", "warp_previous_key"]


def _warped_from(key: int, style: Tensor, pairs: PairFlows, targets: list[int]) -> dict[int, Tensor]:
    return {j: warp(style[None].float(), to_key)[0] for j, to_key, _ in chain_to_key(pairs, key, targets)}


def nearest_key(frames: Tensor, keys: Mapping[int, Tensor], pairs: PairFlows | None = None) -> Tensor:
    """Every frame is a copy of the key frame nearest in time (the earlier one on a tie)."""
    order = sorted(keys)
    out = torch.empty_like(frames)
    for j in range(frames.shape[0]):
        out[j] = keys[min(order, key=lambda k: (abs(k - j), k))].to(frames)
    return out


def warp_previous_key(frames: Tensor, keys: Mapping[int, Tensor], pairs: PairFlows) -> Tensor:
    """Every frame is the latest key at or before it, warped by the chained flow (frames before the first key
    take the first key, warped backwards)."""
    order, t = sorted(keys), frames.shape[0]
    out = torch.empty_like(frames)
    bounds = order + [t]
    for k, nxt in zip(order, bounds[1:]):
        out[k] = keys[k].to(frames)
        for j, img in _warped_from(k, keys[k], pairs, list(range(k + 1, nxt))).items():
            out[j] = img
    for j, img in _warped_from(order[0], keys[order[0]], pairs, list(range(order[0] - 1, -1, -1))).items():
        out[j] = img
    return out.clamp(0, 1)


def bidirectional_warp_blend(frames: Tensor, keys: Mapping[int, Tensor], pairs: PairFlows) -> Tensor:
    """Between two keys: (1 - w) * warp(earlier key) + w * warp(later key), w the frame's position in the
    interval; outside the keys, the one key warped."""
    out = warp_previous_key(frames, keys, pairs)
    order = sorted(keys)
    for k0, k1 in zip(order[:-1], order[1:]):
        inner = list(range(k0 + 1, k1))
        backward = _warped_from(k1, keys[k1], pairs, inner[::-1])
        for j in inner:
            w = (j - k0) / (k1 - k0)
            out[j] = (1 - w) * out[j] + w * backward[j]
    return out.clamp(0, 1)


BASELINES = {
    "nearest_key": nearest_key,
    "warp_previous_key": warp_previous_key,
    "bidirectional_warp_blend": bidirectional_warp_blend,
}
