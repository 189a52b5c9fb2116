"""The reference frame of Animate Anyone-style protocols (`eval.reference`): scored or not, and always both.

The reference image is frame `frame` of each test video. When the scored clip contains it, a model that
copies its input is exact there, which inflates SSIM/PSNR/LPIPS. `scored` says whether the protocol's
paired metrics include that frame (the published rows' practice, stated in each protocol file); when it
does, every paired metric is also reported without it as `<name>_without_reference`, so both are always
in metrics.json. Unpaired metrics (FVD) and metrics on generated videos alone are not affected.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from src.eval.metric_setup import ConfiguredMetric, build_metrics
from src.eval.video_sources import ClipSpec

WITHOUT_SUFFIX = "_without_reference"


@dataclass(frozen=True)
class ReferenceFrame:
    """`frame`: the source-video index of the reference image (None: the protocol has none); `scored`:
    whether the protocol's paired metrics score that frame when the clip contains it."""

    frame: int | None = None
    scored: bool = True

    def position(self, clip: ClipSpec) -> int | None:
        """Where the reference frame sits in the scored clip (None: the clip does not contain it, or starts
        at a random frame, which Animate Anyone's protocols do not)."""
        if self.frame is None or not isinstance(clip.start, int):
            return None
        if self.frame < clip.start or (self.frame - clip.start) % clip.stride:
            return None
        position = (self.frame - clip.start) // clip.stride
        if clip.num_frames is not None and position >= clip.num_frames:
            return None
        return position

    def describe(self, clip: ClipSpec) -> dict[str, Any]:
        return {"frame": self.frame, "scored": self.scored, "position_in_clip": self.position(clip)}


def drop_frame(videos: Tensor, position: int | None) -> Tensor:
    """`(B, T, C, H, W)` without frame `position` (unchanged for None or a position past the clip)."""
    if position is None or position >= videos.shape[1]:
        return videos
    return torch.cat([videos[:, :position], videos[:, position + 1 :]], dim=1)


def apply_reference_rule(
    metrics: dict[str, ConfiguredMetric], specs: dict, device: torch.device, reference: ReferenceFrame,
    clip: ClipSpec,
) -> dict[str, ConfiguredMetric]:
    """The protocol's metrics with the reference rule applied to the paired ones: they drop the reference
    frame when `scored` is off; when it is on, a `<name>_without_reference` twin that drops it is added."""
    position = reference.position(clip)
    if position is None:
        return metrics
    out: dict[str, ConfiguredMetric] = {}
    for name, configured in metrics.items():
        if configured.inputs != "paired":
            out[name] = configured
            continue
        if not reference.scored:
            configured.drop_frame = position
            out[name] = configured
            continue
        out[name] = configured
        twin = build_metrics({name: specs[name]}, device)[name]
        twin.name, twin.drop_frame = name + WITHOUT_SUFFIX, position
        out[twin.name] = twin
    return out
