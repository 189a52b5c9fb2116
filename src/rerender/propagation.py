"""Full-video propagation of stylised key frames: guided PatchMatch from each key, forward and backward over
its interval, combined per pixel with the flow-warped key, then blended across the two directions.

Per direction (key k towards frame j), following the official recipe's guides: colour (key input vs frame j,
weight 6), edge (3x3 Laplacian, 0.5), temporal (key style vs this direction's previous output carried to j by
flow, 0.5), positional (key coordinates vs coordinates advected by the chained flow, 2); a guide's weight is
spread over its channels, as Ebsynth does. The PatchMatch field starts from the chained flow j -> k.

What beats the plain bidirectional flow-warp blend (`use_warp`): where the chained flow j -> k is visible at
every step and the warped key input agrees with frame j (colour residual under `warp_tolerance`), the
direction keeps the warped key (one bilinear sample, no patch-vote blur); where only the last step j-1 -> j
is visible and agrees, it carries its own previous result (so re-synthesised content moves with the scene
instead of being drawn anew each frame); only the rest (disocclusions, flow failures) keeps the patch
synthesis, and only there is PatchMatch searched. The two directions are then mixed linearly by distance
(`blend="linear"`), or with Rerender's error-based selection + histogram-preserving blend
(`blend="official"`), or by which direction kept its warp (`"validity"`); `temporal_smoothing` then mixes each
non-key frame with its flow-carried neighbours (temporal_filter.py); `poisson` adds the screened Poisson solve. Frames `t 3 h w` float in [0, 1].
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from src.rerender.blending import histogram_preserving_blend, screened_poisson, select_by_error
from src.rerender.flow import PairFlows, chain_to_key, warp
from src.rerender.patchmatch import PatchMatchSettings, synthesize
from src.rerender.temporal_filter import temporal_filter

__all__ = ["DirectionResult", "Propagator", "interval_weight"]

LAPLACIAN = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]])


@dataclass
class DirectionResult:
    """One frame propagated from one key: output `3 h w`, warp kept `h w` bool, patch error `h w`."""

    output: Tensor
    warp_kept: Tensor
    error: Tensor


def interval_weight(j: int, k0: int, k1: int) -> float:
    """Position of frame j in [k0, k1]: 0 at the earlier key, 1 at the later one."""
    return (j - k0) / (k1 - k0)


def _edges(frame: Tensor) -> Tensor:
    gray = frame.mean(0, keepdim=True)[None]
    lap = F.conv2d(F.pad(gray, (1, 1, 1, 1), mode="replicate"), LAPLACIAN.to(frame)[None, None])
    return lap[0] + 0.5


def _coordinates(h: int, w: int, flow: Tensor | None, device: torch.device) -> Tensor:
    ys, xs = torch.meshgrid(
        torch.arange(h, device=device, dtype=torch.float32),
        torch.arange(w, device=device, dtype=torch.float32),
        indexing="ij",
    )
    if flow is not None:
        xs, ys = xs + flow[0, 0], ys + flow[0, 1]
    return torch.stack([xs / max(w - 1, 1), ys / max(h - 1, 1)])


class Propagator:
    """Propagate key frames `{index: 3 h w}` to every frame of `frames` (`t 3 h w`) with flows `PairFlows`."""

    def __init__(
        self,
        colour_weight: float = 6.0,
        edge_weight: float = 0.5,
        temporal_weight: float = 0.5,
        positional_weight: float = 2.0,
        patch_size: int = 5,
        search_vote_iters: int = 12,
        patchmatch_iters: int = 6,
        use_warp: bool = True,
        warp_tolerance: float = 0.06,
        blend: str = "linear",
        temporal_smoothing: float = 0.7,
        poisson: bool = False,
        poisson_weight: float = 0.5,
        seed: int = 0,
    ) -> None:
        if blend not in ("validity", "official", "linear"):
            raise ValueError(f"rerender.propagation.blend must be validity, official or linear, got {blend!r}")
        self.weights = (colour_weight, edge_weight, temporal_weight, positional_weight)
        self.settings = PatchMatchSettings(patch_size, search_vote_iters, patchmatch_iters)
        self.use_warp, self.warp_tolerance = use_warp, warp_tolerance
        self.blend, self.poisson, self.poisson_weight, self.seed = blend, poisson, poisson_weight, seed
        self.temporal_smoothing = temporal_smoothing

    def guide_weights(self, device: torch.device) -> Tensor:
        """Per-channel weights: colour 3, edge 1, temporal 3, positional 2 channels; a guide's weight is
        divided by its channel count (Ebsynth)."""
        c, e, t, p = self.weights
        return torch.tensor([c / 3] * 3 + [e] + [t / 3] * 3 + [p / 2] * 2, device=device)

    def direction(self, frames: Tensor, key: int, style: Tensor, pairs: PairFlows, targets: list[int]):
        """Yield (j, DirectionResult) for `targets` walking away from `key`."""
        _, _, h, w = frames.shape
        device = frames.device
        generator = torch.Generator(device=device).manual_seed(self.seed * 100003 + key)
        weights = self.guide_weights(device)
        src_guide = torch.cat([frames[key], _edges(frames[key]), style, _coordinates(h, w, None, device)])
        previous = style
        for j, to_key, visible in chain_to_key(pairs, key, targets):
            if j > key:
                step, step_visible, before = pairs.backward[j - 1 : j], pairs.backward_valid[j - 1 : j], j - 1
            else:
                step, step_visible, before = pairs.forward[j : j + 1], pairs.forward_valid[j : j + 1], j + 1
            carried = warp(previous[None], step, "nearest")[0]
            tgt_guide = torch.cat([frames[j], _edges(frames[j]), carried, _coordinates(h, w, to_key, device)])
            if self.use_warp:
                kept = visible[0, 0] & self._agrees(frames[key], frames[j], to_key)
                moved = step_visible[0, 0] & ~kept & self._agrees(frames[before], frames[j], step)
                reach = 2 * self.settings.patch_size + 1  # searched pixels: the rest, and a margin for the vote
                active = F.max_pool2d((~(kept | moved))[None, None].float(), reach, 1, reach // 2)[0, 0] > 0
            else:
                kept = moved = torch.zeros(h, w, dtype=torch.bool, device=device)
                active = None
            synth, _, error = synthesize(
                src_guide, tgt_guide, style, weights, self.settings, to_key[0].flip(0), generator, active
            )
            output = torch.where(kept, warp(style[None], to_key)[0], synth)
            output = torch.where(moved, warp(previous[None], step)[0], output)
            previous = output
            yield j, DirectionResult(output, kept | moved, error)

    def _agrees(self, source: Tensor, target: Tensor, flow: Tensor) -> Tensor:
        """Pixels of `target` whose input colour matches `source` warped by `flow` (3x3 max residual)."""
        residual = (warp(source[None], flow)[0] - target).abs().mean(0)
        return F.max_pool2d(residual[None, None], 3, 1, 1)[0, 0] < self.warp_tolerance

    def combine(self, fw: DirectionResult, bw: DirectionResult, w_bw: float) -> Tensor:
        """Blend the two directions of one frame (see the module docstring)."""
        if self.blend == "linear":
            out = (1 - w_bw) * fw.output + w_bw * bw.output
            forward_wins = torch.full_like(fw.warp_kept, w_bw < 0.5)
        else:
            forward_wins = select_by_error(fw.error, bw.error, w_bw)
            selected = torch.where(forward_wins, fw.output, bw.output)
            if self.blend == "official":
                out = histogram_preserving_blend(fw.output, bw.output, w_bw, selected)
            else:
                both = fw.warp_kept & bw.warp_kept
                linear = (1 - w_bw) * fw.output + w_bw * bw.output
                out = torch.where(
                    both, linear, torch.where(fw.warp_kept, fw.output, torch.where(bw.warp_kept, bw.output, selected))
                )
        if self.poisson:
            source = torch.where(forward_wins, fw.output, bw.output)
            out = screened_poisson(out, source, self.poisson_weight).clamp(0, 1)
        return out

    @torch.no_grad()
    def __call__(self, frames: Tensor, keys: Mapping[int, Tensor], pairs: PairFlows) -> Tensor:
        t = frames.shape[0]
        if not keys:
            raise ValueError("propagation needs at least one key frame")
        order = sorted(keys)
        if order[0] < 0 or order[-1] >= t:
            raise ValueError(f"key frame indices {order} fall outside the video's {t} frames (0..{t - 1})")
        out = torch.empty_like(frames)
        for k in order:
            out[k] = keys[k].to(frames)
        # before the first key / after the last key: one direction only
        for j, res in self.direction(frames, order[0], keys[order[0]].to(frames), pairs, list(range(order[0] - 1, -1, -1))):
            out[j] = res.output
        for j, res in self.direction(frames, order[-1], keys[order[-1]].to(frames), pairs, list(range(order[-1] + 1, t))):
            out[j] = res.output
        for k0, k1 in zip(order[:-1], order[1:]):
            inner = list(range(k0 + 1, k1))
            if not inner:
                continue
            forward = dict(self.direction(frames, k0, keys[k0].to(frames), pairs, inner))
            backward = dict(self.direction(frames, k1, keys[k1].to(frames), pairs, inner[::-1]))
            for j in inner:
                out[j] = self.combine(forward[j], backward[j], interval_weight(j, k0, k1))
        return temporal_filter(out.clamp(0, 1), pairs, order, self.temporal_smoothing)
