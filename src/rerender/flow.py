"""Optical flow behind one small interface (`FlowEstimator`) with two providers, plus the occlusion check
and the flow algebra that propagation needs.

Providers: torchvision RAFT from a local checkpoint (the one the Pixel-MSE metric loads; default for real
videos) and OpenCV's DIS (weight-free, CPU; for the demo and machines without the RAFT file). Both take
frames `(N, 3, H, W)` in [0, 1] and return flow `(N, 2, H, W)` from a to b, with a(x) ~ b(x + flow(x)).
Occlusion is the forward-backward consistency check of `src.eval.flow_metrics` (one implementation).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from torch import Tensor

from src.eval.flow_metrics import RaftFlow, backward_warp, consistency_mask, load_raft

__all__ = [
    "DisFlow",
    "FlowEstimator",
    "PairFlows",
    "build_flow",
    "compose_flows",
    "pair_flows",
    "warp",
]

DIS_PRESETS = {"ultrafast": 0, "fast": 1, "medium": 2}


class FlowEstimator(Protocol):
    """flow(a, b): `(N, 3, H, W)` frames in [0, 1] -> `(N, 2, H, W)` flow from a to b in pixels."""

    def __call__(self, a: Tensor, b: Tensor) -> Tensor: ...


class DisFlow:
    """OpenCV's Dense Inverse Search flow on grayscale frames (CPU, no weights).

    Computed in numpy per pair; the result is returned on the input's device and dtype.
    """

    def __init__(self, preset: str = "medium") -> None:
        import cv2

        if preset not in DIS_PRESETS:
            raise ValueError(f"DIS preset must be one of {sorted(DIS_PRESETS)}, got {preset!r}")
        self.preset = preset
        self._dis = cv2.DISOpticalFlow_create(DIS_PRESETS[preset])

    def __call__(self, a: Tensor, b: Tensor) -> Tensor:
        import cv2

        def gray(x: Tensor) -> np.ndarray:
            rgb = (x.detach().float().clamp(0, 1) * 255).round().byte().permute(1, 2, 0).cpu().numpy()
            return cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY)

        flows = [self._dis.calc(gray(x), gray(y), None) for x, y in zip(a, b)]
        out = torch.from_numpy(np.stack(flows)).permute(0, 3, 1, 2)
        return out.to(device=a.device, dtype=a.dtype if a.is_floating_point() else torch.float32)


def build_flow(
    name: str = "raft",
    raft_checkpoint: str | Path | None = None,
    raft_variant: str = "raft_large",
    num_flow_updates: int = 12,
    dis_preset: str = "medium",
    device: str | torch.device = "cpu",
    config_key: str = "rerender.flow.raft_checkpoint",
) -> FlowEstimator:
    """The configured provider: "raft" (local torchvision checkpoint, strict) or "dis" (OpenCV, weight-free)."""
    if name == "dis":
        return DisFlow(dis_preset)
    if name == "raft":
        raft = load_raft(raft_checkpoint, raft_variant, config_key)  # type: ignore[arg-type]
        return RaftFlow(raft, num_flow_updates).to(device)
    raise ValueError(f"rerender.flow.name must be 'raft' or 'dis', got {name!r}")


def warp(image: Tensor, flow: Tensor, mode: str = "bilinear") -> Tensor:
    """Sample `image` at x + flow(x) (`bilinear`, the project's `backward_warp`, or `nearest`); zeros outside."""
    if mode == "bilinear":
        return backward_warp(image, flow.to(image.dtype))[0]
    if mode != "nearest":
        raise ValueError(f"warp mode must be 'bilinear' or 'nearest', got {mode!r}")
    n, _, h, w = image.shape
    ys, xs = torch.meshgrid(
        torch.arange(h, device=image.device), torch.arange(w, device=image.device), indexing="ij"
    )
    x_new, y_new = (xs + flow[:, 0]).round().long(), (ys + flow[:, 1]).round().long()
    inside = (x_new >= 0) & (x_new < w) & (y_new >= 0) & (y_new < h)
    index = (y_new.clamp(0, h - 1) * w + x_new.clamp(0, w - 1)).flatten(1)
    out = image.flatten(2).gather(2, index[:, None].expand(-1, image.shape[1], -1)).view_as(image)
    return out * inside[:, None]


def compose_flows(flow_ab: Tensor, flow_bc: Tensor, valid_ab: Tensor, valid_bc: Tensor) -> tuple[Tensor, Tensor]:
    """flow a->c = flow_ab(x) + flow_bc(x + flow_ab(x)); valid where both steps are (and x lands in frame).

    Chaining the coordinate maps, not the warped images, keeps one bilinear resampling of the key frame
    however far it is carried, so propagated content does not blur frame after frame.
    """
    bc_at, inside = backward_warp(flow_bc, flow_ab)
    valid_at = backward_warp(valid_bc.to(flow_ab.dtype), flow_ab)[0] > 0.999
    return flow_ab + bc_at, valid_ab & inside & valid_at


@dataclass
class PairFlows:
    """Flows between consecutive frames of a video `t 3 h w`: `forward[i]` = flow i -> i+1, `backward[i]`
    = flow i+1 -> i, `(T-1, 2, H, W)`; `forward_valid` / `backward_valid` `(T-1, 1, H, W)` bool are the
    forward-backward consistent (visible) pixels of frame i and frame i+1."""

    forward: Tensor
    backward: Tensor
    forward_valid: Tensor
    backward_valid: Tensor


def pair_flows(frames: Tensor, flow: FlowEstimator, batch: int = 8) -> PairFlows:
    """Both flows of every consecutive pair, and their occlusion masks, in batches of `batch` pairs."""
    if frames.shape[0] < 2:
        raise ValueError(f"need at least 2 frames to compute flow, got {frames.shape[0]}")
    fw, bw = [], []
    with torch.no_grad():
        for s in range(0, frames.shape[0] - 1, batch):
            a, b = frames[s : s + batch + 1][:-1], frames[s + 1 : s + batch + 1]
            fw.append(flow(a, b).float())
            bw.append(flow(b, a).float())
    forward, backward = torch.cat(fw), torch.cat(bw)
    return PairFlows(
        forward, backward, consistency_mask(forward, backward), consistency_mask(backward, forward)
    )


def chain_to_key(pairs: PairFlows, key: int, targets: list[int]):
    """Yield (j, flow j -> key `(1, 2, H, W)`, valid `(1, 1, H, W)`) for `targets`, which must walk away from
    `key` one frame at a time (key+1, key+2, ... or key-1, key-2, ...); flows are chained, see compose_flows."""
    if not targets:
        return
    step = 1 if targets[0] > key else -1
    expected = list(range(key + step, key + step * (len(targets) + 1), step))
    if list(targets) != expected:
        raise ValueError(f"targets must walk away from key {key} one frame at a time, got {targets}")
    _, _, h, w = pairs.forward.shape
    to_key = torch.zeros(1, 2, h, w, device=pairs.forward.device)
    valid = torch.ones(1, 1, h, w, dtype=torch.bool, device=pairs.forward.device)
    for j in targets:
        if step == 1:  # j -> j-1 is the backward flow of pair j-1
            flow, ok = pairs.backward[j - 1 : j], pairs.backward_valid[j - 1 : j]
        else:  # j -> j+1 is the forward flow of pair j
            flow, ok = pairs.forward[j : j + 1], pairs.forward_valid[j : j + 1]
        to_key, valid = compose_flows(flow, to_key, ok, valid)
        yield j, to_key, valid
