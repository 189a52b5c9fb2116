"""Guided patch synthesis (Ebsynth-style PatchMatch) in vectorised PyTorch, for GPU and CPU.

Given source guides + source style (a key frame) and target guides (another frame), find for every target
pixel the source patch whose guides (and, after the first vote, whose style) match best, then vote: each
target pixel averages the style of every overlapping patch. Coarse-to-fine over an image pyramid, with
`search_vote_iters` rounds of (`patchmatch_iters` PatchMatch iterations, then a vote) per level, as
Ebsynth's `-searchvoteiters` / `-patchmatchiters`. Every pixel moves in parallel (propagation from
neighbours at distance 1 and at a halving jump, plus one random candidate per iteration at a halving
radius), so an iteration is a handful of batched gathers. A level stops early when fewer than
`stop_fraction` of the pixels improved in an iteration (Ebsynth's stop threshold plays this role).

Layouts: guides and styles are `c h w` float; the nearest-neighbour field (NNF) is `h w 2` long (y, x) of
each target pixel's source patch centre; patch errors are mean squared weighted differences per pixel.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["PatchMatchSettings", "synthesize"]


@dataclass(frozen=True)
class PatchMatchSettings:
    """Ebsynth's knobs (Rerender's recipe: patch 5, search/vote 12, PatchMatch 6)."""

    patch_size: int = 5
    search_vote_iters: int = 12
    patchmatch_iters: int = 6
    style_weight: float = 1.0  # weight of the style term once a first vote exists (Ebsynth's default)
    min_level_side: int = 24  # pyramid: halve while the shorter side stays >= this
    max_levels: int = 4
    stop_fraction: float = 0.02

    def __post_init__(self) -> None:
        if self.patch_size < 1 or self.patch_size % 2 == 0:
            raise ValueError(f"patch_size must be a positive odd number, got {self.patch_size}")
        if self.search_vote_iters < 1 or self.patchmatch_iters < 1:
            raise ValueError("search_vote_iters and patchmatch_iters must be >= 1")


def _patches(image: Tensor, size: int) -> Tensor:
    """`c h w` -> `(h*w, c*size*size)`, replicate-padded so every pixel has a full patch."""
    r = size // 2
    padded = F.pad(image[None], (r, r, r, r), mode="replicate")
    return F.unfold(padded, size)[0].t().contiguous()


def _distance(src_feat: Tensor, tgt_feat: Tensor, nnf: Tensor, src_w: int) -> Tensor:
    """Squared feature distance `(..., h*w)` for candidate fields `(..., h*w, 2)`."""
    idx = nnf[..., 0] * src_w + nnf[..., 1]
    return (src_feat[idx] - tgt_feat).pow(2).sum(-1)


def _clamp(nnf: Tensor, src_h: int, src_w: int) -> Tensor:
    return torch.stack([nnf[..., 0].clamp(0, src_h - 1), nnf[..., 1].clamp(0, src_w - 1)], dim=-1)


def _shifted(nnf: Tensor, dy: int, dx: int, src_h: int, src_w: int) -> Tensor:
    """Candidate from the neighbour at (y - dy, x - dx): its match moved by (dy, dx)."""
    h, w = nnf.shape[:2]
    grid = nnf.permute(2, 0, 1)[None].float()
    pad = (max(dx, 0), max(-dx, 0), max(dy, 0), max(-dy, 0))
    padded = F.pad(grid, pad, mode="replicate")
    y0, x0 = pad[2] - dy, pad[0] - dx
    moved = padded[0, :, y0 : y0 + h, x0 : x0 + w].permute(1, 2, 0).long()
    moved = moved + torch.tensor([dy, dx], device=nnf.device)
    return _clamp(moved, src_h, src_w)


def _vote(src_style: Tensor, nnf: Tensor, size: int) -> Tensor:
    """Each target pixel averages the source style that the patches covering it assign to it."""
    r = size // 2
    h, w = nnf.shape[:2]
    src_h, src_w = src_style.shape[-2:]
    flat = src_style.flatten(1)
    padded = F.pad(nnf.permute(2, 0, 1)[None].float(), (r, r, r, r), mode="replicate")[0].long()
    out = torch.zeros(src_style.shape[0], h * w, device=src_style.device, dtype=src_style.dtype)
    for dy in range(-r, r + 1):
        for dx in range(-r, r + 1):
            # the patch centred at q = p + d places source pixel nnf(q) - d on p
            q = padded[:, r + dy : r + dy + h, r + dx : r + dx + w]
            sy = (q[0] - dy).clamp(0, src_h - 1)
            sx = (q[1] - dx).clamp(0, src_w - 1)
            out += flat[:, (sy * src_w + sx).flatten()]
    return (out / size**2).view(-1, h, w)


def _resize(image: Tensor, size: tuple[int, int]) -> Tensor:
    if tuple(image.shape[-2:]) == size:
        return image
    return F.interpolate(image[None], size=size, mode="bilinear", align_corners=False, antialias=True)[0]


def _resample_nnf(offsets: Tensor, size: tuple[int, int], src_size: tuple[int, int]) -> Tensor:
    """Offset field `2 h w` (source - target, at its own scale) -> NNF at `size` for a source of `src_size`."""
    h, w = size
    scale = torch.tensor([h / offsets.shape[-2], w / offsets.shape[-1]], device=offsets.device)
    up = F.interpolate(offsets[None], size=size, mode="nearest")[0] * scale[:, None, None]
    ys, xs = torch.meshgrid(torch.arange(h, device=up.device), torch.arange(w, device=up.device), indexing="ij")
    nnf = torch.stack([ys + up[0], xs + up[1]], dim=-1).round().long()
    return _clamp(nnf, *src_size)


def _level_sizes(h: int, w: int, settings: PatchMatchSettings) -> list[tuple[int, int]]:
    sizes = [(h, w)]
    while len(sizes) < settings.max_levels and min(sizes[-1]) // 2 >= settings.min_level_side:
        sizes.append((sizes[-1][0] // 2, sizes[-1][1] // 2))
    return sizes[::-1]


def _search(
    src_feat: Tensor,
    tgt_feat: Tensor,
    nnf: Tensor,
    active: Tensor,
    src_size: tuple[int, int],
    iters: int,
    stop_fraction: float,
    generator: torch.Generator | None,
) -> tuple[Tensor, Tensor, float]:
    """`iters` parallel PatchMatch iterations over the `active` pixels (flat indices); returns the NNF
    `(h, w, 2)` and the fraction of active pixels improved in the first iteration."""
    h, w = nnf.shape[:2]
    src_h, src_w = src_size
    radius = max(src_h, src_w)
    first_fraction = 0.0
    tgt_active = tgt_feat[active]
    cost = _distance(src_feat, tgt_active, nnf.view(h * w, 2)[active], src_w)
    for it in range(iters):
        jump = max(1, 8 >> it)
        steps = [(0, 1), (0, -1), (1, 0), (-1, 0)]
        if jump > 1:
            steps += [(0, jump), (0, -jump), (jump, 0), (-jump, 0)]
        flat = nnf.view(h * w, 2)
        cands = [_shifted(nnf, dy, dx, src_h, src_w).view(h * w, 2)[active] for dy, dx in steps]
        r = max(1, radius >> it)
        noise = torch.randint(-r, r + 1, (active.numel(), 2), device=nnf.device, generator=generator)
        cands.append(_clamp(flat[active] + noise, src_h, src_w))
        stack = torch.stack(cands)
        costs = _distance(src_feat, tgt_active, stack, src_w)
        best_cost, best = costs.min(0)
        better = best_cost < cost
        fraction = float(better.float().mean()) if better.numel() else 0.0
        if it == 0:
            first_fraction = fraction
        if fraction == 0.0:
            break
        chosen = stack.gather(0, best.view(1, -1, 1).expand(1, -1, 2))[0]
        flat = flat.clone()
        flat[active] = torch.where(better[:, None], chosen, flat[active])
        cost = torch.minimum(cost, best_cost)
        nnf = flat.view(h, w, 2)
        if fraction < stop_fraction:
            break
    return nnf, first_fraction


def synthesize(
    src_guide: Tensor,
    tgt_guide: Tensor,
    src_style: Tensor,
    guide_weights: Tensor,
    settings: PatchMatchSettings = PatchMatchSettings(),
    init_offsets: Tensor | None = None,
    generator: torch.Generator | None = None,
    active: Tensor | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Synthesize the target's style from the source.

    src_guide `cg hs ws`, tgt_guide `cg h w`, src_style `cs hs ws`; guide_weights `(cg,)` per channel.
    init_offsets `2 h w` (dy, dx from target pixel to its source pixel, e.g. a flow to the key frame; None =
    random). active `h w` bool: search only these pixels (the rest keep the initial field, e.g. where the
    flow is trusted); None = all. Returns (style `cs h w`, NNF `h w 2` long, per-pixel patch error `h w`).
    """
    if src_guide.shape[0] != tgt_guide.shape[0] or guide_weights.numel() != src_guide.shape[0]:
        raise ValueError(
            f"guides must have the same channels as guide_weights: source {src_guide.shape[0]}, target "
            f"{tgt_guide.shape[0]}, weights {guide_weights.numel()}"
        )
    if src_style.shape[-2:] != src_guide.shape[-2:]:
        raise ValueError(f"source style {tuple(src_style.shape)} and guide {tuple(src_guide.shape)} differ in size")
    h, w = tgt_guide.shape[-2:]
    src_hw = tuple(src_guide.shape[-2:])
    p = settings.patch_size
    gw = guide_weights.to(src_guide)[:, None, None].sqrt()
    sw = torch.full((src_style.shape[0], 1, 1), settings.style_weight, device=src_guide.device).sqrt()
    sizes = _level_sizes(h, w, settings)
    src_sizes = [(max(1, src_hw[0] * lh // h), max(1, src_hw[1] * lw // w)) for lh, lw in sizes]
    offsets = init_offsets
    style = None
    nnf = None
    for (lh, lw), (sh, sw_) in zip(sizes, src_sizes):
        sg, tg, ss = _resize(src_guide, (sh, sw_)) * gw, _resize(tgt_guide, (lh, lw)) * gw, _resize(src_style, (sh, sw_))
        src_feat = torch.cat([_patches(sg, p), _patches(ss * sw, p)], dim=1)
        tgt_guide_feat = _patches(tg, p)
        if nnf is None:
            if offsets is None:
                nnf = torch.stack(
                    [
                        torch.randint(0, sh, (lh, lw), device=sg.device, generator=generator),
                        torch.randint(0, sw_, (lh, lw), device=sg.device, generator=generator),
                    ],
                    dim=-1,
                )
            else:
                scaled = _resize(offsets.float(), (lh, lw)) * torch.tensor(
                    [lh / h, lw / w], device=sg.device
                )[:, None, None]
                nnf = _resample_nnf(scaled, (lh, lw), (sh, sw_))
        else:
            prev = nnf.permute(2, 0, 1).float()
            ys, xs = torch.meshgrid(
                torch.arange(prev.shape[1], device=sg.device),
                torch.arange(prev.shape[2], device=sg.device),
                indexing="ij",
            )
            nnf = _resample_nnf(prev - torch.stack([ys, xs]), (lh, lw), (sh, sw_))
        style = _vote(ss, nnf, p) if style is None else _resize(style, (lh, lw))
        if active is None:
            level_active = torch.arange(lh * lw, device=sg.device)
        else:
            mask = F.adaptive_max_pool2d(active[None, None].float(), (lh, lw))[0, 0] > 0
            level_active = mask.flatten().nonzero()[:, 0]
        for _ in range(settings.search_vote_iters):
            if level_active.numel() == 0:
                break
            tgt_feat = torch.cat([tgt_guide_feat, _patches(style * sw, p)], dim=1)
            nnf, improved = _search(
                src_feat, tgt_feat, nnf, level_active, (sh, sw_), settings.patchmatch_iters,
                settings.stop_fraction, generator,
            )
            style = _vote(ss, nnf, p)
            if improved < settings.stop_fraction:
                break
    assert style is not None and nnf is not None
    tgt_feat = torch.cat([tgt_guide_feat, _patches(style * sw, p)], dim=1)
    cost = _distance(src_feat, tgt_feat, nnf.view(-1, 2), src_hw[1])
    return style, nnf, (cost / src_feat.shape[1]).view(h, w)
