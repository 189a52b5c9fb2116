"""Fixed DynamiCrafter evaluation clips from held-out caption-video shards.

Each clip is the first `num_frames` frames of a video at a fixed `stride` (frame 0 is the condition image,
as at inference), resized/center-cropped to `size`, with its caption chosen as in training. Items have the
training batch's keys: "video" `c t h w` float in [-1, 1], "caption", "frame_stride", "fps", "key",
"skipped" ({}), "caption_fallback". Only the needed frames are decoded, so long source videos are cheap.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

from omegaconf import DictConfig
from torch.utils.data import DataLoader, Dataset
from webdataset.tariterators import tarfile_samples

from src.data.caption_video_dataset import (
    choose_caption,
    collate_caption_video,
    fitting_stride,
    to_model_video,
)
from src.data.clip_sampling import ClipTooShort
from src.data.sample_stream import SampleError
from src.data.shards import list_shards
from src.data.video_io import decode_mp4, probe_mp4

__all__ = ["CaptionHeldoutClips", "caption_clip_item", "load_caption_heldout", "val_loader_from_config"]


class CaptionHeldoutClips(Dataset):
    """A list of ready evaluation items (see the module docstring); build with `load_caption_heldout`."""

    def __init__(self, items: list[dict[str, Any]]) -> None:
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.items[index]


def caption_clip_item(
    raw: dict[str, Any], num_frames: int, stride: int, size, caption_key: str,
    start_of: Callable[[int], int] | None = None,
) -> dict[str, Any]:
    """One evaluation clip from a raw webdataset sample ("__key__", "mp4", "json" bytes). `start_of` maps the
    video's frame count to the clip's first frame (None: frame 0, as validation does)."""
    key = raw["__key__"]
    for entry in ("mp4", "json"):
        if entry not in raw:
            raise SampleError(f"held-out sample {key} in {raw.get('__url__')} has no '{entry}' entry")
    meta = json.loads(raw["json"])
    caption, fell_back = choose_caption(meta, caption_key)
    info = probe_mp4(raw["mp4"])
    fitting_stride(info.num_frames, num_frames, stride, stride)  # raises if the fixed stride does not fit
    start = start_of(info.num_frames) if start_of is not None else 0
    if start + (num_frames - 1) * stride >= info.num_frames:
        raise ClipTooShort(
            f"a clip of {num_frames} frames at stride {stride} from frame {start} needs "
            f"{start + (num_frames - 1) * stride + 1} frames but the video has {info.num_frames}"
        )
    frames = decode_mp4(raw["mp4"], [start + i * stride for i in range(num_frames)])
    fps = float(meta.get("fps") or info.fps)
    return {
        "video": to_model_video(frames, tuple(size)),
        "caption": caption,
        "frame_stride": stride,
        "fps": fps / stride,
        "key": key,
        "skipped": {},
        "caption_fallback": fell_back,
    }


def load_caption_heldout(
    shards: str | Sequence[str],
    num_videos: int,
    num_frames: int,
    stride: int,
    size,
    caption_key: str = "caption",
) -> CaptionHeldoutClips:
    """The first `num_videos` held-out videos (shard order) as evaluation clips; a bad sample is an error
    (an evaluation set must not shrink silently)."""
    if num_videos < 1 or num_frames < 1 or stride < 1:
        raise ValueError(
            f"need num_videos, num_frames and stride >= 1, got {num_videos}, {num_frames}, {stride}"
        )
    items: list[dict[str, Any]] = []
    for raw in tarfile_samples({"url": p} for p in list_shards(shards)):
        if len(items) >= num_videos:
            break
        try:
            items.append(caption_clip_item(raw, num_frames, stride, size, caption_key))
        except Exception as exc:
            raise SampleError(
                f"cannot use held-out sample {raw.get('__key__')} from {raw.get('__url__')}: {exc}. Lower "
                "evaluation/data.val num_frames or stride, or fix the held-out shards."
            ) from exc
    return CaptionHeldoutClips(items)


def val_loader_from_config(data: DictConfig, shards: str | Sequence[str]) -> DataLoader:
    """Validation clips (`data.val`: num_videos, num_frames, stride) at `data.size`, batch 1."""
    v = data.val
    clips = load_caption_heldout(shards, v.num_videos, v.num_frames, v.stride, data.size, data.caption_key)
    return DataLoader(clips, batch_size=1, shuffle=False, collate_fn=collate_caption_video)
