"""DynamiCrafter training pipeline: caption-video shards -> clips of `num_frames` frames with their caption.

Shard samples carry `mp4` and `json` (format: src.data.webvid / notes in dc_format). A clip is `num_frames`
frames `stride` apart from a uniformly random start; the stride is drawn uniformly in `stride_range` per
sample (the release's `random_fs`, [1, 6]) or fixed, and lowered to the largest stride in range that fits a
short video (the release falls back the same way). Frames are resized on the shorter side and
center-cropped to `size`. The caption is `json[caption_key]`, falling back to `json["caption"]` when that
key is missing or empty (counted per sample in "caption_fallback"). Layouts: `t h w c` uint8 on disk;
samples are `c t h w` float in [-1, 1]. Streaming, skipping and exact batch counts: src.data.sample_stream.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig

from src.data.clip_sampling import ClipTooShort
from src.data.sample_stream import (
    ExactBatchLoader,
    SampleError,
    ShardSampleDataset,
    collate_skips,
    require_entries,
    stream_settings,
)
from src.data.shards import list_shards, read_meta
from src.data.transforms import CropBox, crop_resize
from src.data.video_io import decode_mp4, probe_mp4

__all__ = [
    "CAPTION_KEYS",
    "CaptionVideoDataset",
    "center_crop_box",
    "choose_caption",
    "collate_caption_video",
    "fitting_stride",
    "loader_from_config",
    "to_model_video",
]

logger = logging.getLogger(__name__)

CAPTION_KEYS = ("caption", "motion_caption", "scene_caption")
FALLBACK_KEY = "caption"


def choose_caption(meta: dict[str, Any], caption_key: str) -> tuple[str, bool]:
    """(caption, fell_back): `meta[caption_key]`, else `meta["caption"]`; raises SampleError if neither is usable."""
    chosen = meta.get(caption_key)
    if isinstance(chosen, str) and chosen.strip():
        return chosen, False
    fallback = meta.get(FALLBACK_KEY)
    if isinstance(fallback, str) and fallback.strip():
        return fallback, caption_key != FALLBACK_KEY
    wanted = f"{caption_key!r} nor {FALLBACK_KEY!r}" if caption_key != FALLBACK_KEY else repr(FALLBACK_KEY)
    raise SampleError(
        f"json has no usable {wanted} caption (keys: {sorted(meta)}); "
        "write shards with python -m src.data.webvid",
        reason="no_caption",
    )


def fitting_stride(num_frames: int, clip_frames: int, wanted: int, lowest: int) -> int:
    """`wanted`, or the largest stride >= `lowest` whose clip fits in `num_frames`; ClipTooShort if none does."""
    if clip_frames == 1:
        return wanted
    largest = (num_frames - 1) // (clip_frames - 1)
    if largest < lowest:
        raise ClipTooShort(
            f"a clip of {clip_frames} frames at stride {'' if wanted == lowest else '>= '}{lowest} needs {(clip_frames - 1) * lowest + 1} frames "
            f"but the video has {num_frames}; lower data.num_frames or data.stride_range, or drop short videos"
        )
    return min(wanted, largest)


def center_crop_box(height: int, width: int, size: tuple[int, int]) -> CropBox:
    """The largest centred box of the target aspect (size = (h, w)): resize-shorter-side + center-crop."""
    target_h, target_w = size
    if width * target_h > height * target_w:  # too wide: keep the height
        crop_h, crop_w = height, max(1, round(height * target_w / target_h))
    else:
        crop_h, crop_w = max(1, round(width * target_h / target_w)), width
    return CropBox((height - crop_h) // 2, (width - crop_w) // 2, crop_h, crop_w)


def to_model_video(frames: np.ndarray, size: tuple[int, int]) -> torch.Tensor:
    """`t h w c` uint8 -> `c t h w` float32 in [-1, 1] at `size`, resized on the short side and center-cropped."""
    box = center_crop_box(frames.shape[1], frames.shape[2], size)
    video = crop_resize(frames, box, tuple(size), kind="pixels")  # t c h w in [0, 1]
    return video.mul_(2.0).sub_(1.0).permute(1, 0, 2, 3).contiguous()


class CaptionVideoDataset(ShardSampleDataset):
    """Iterable of DynamiCrafter training samples from `shards` (a folder, glob, brace pattern or list).

    Each sample: "video" float32 (3, T, H, W) in [-1, 1]; "caption" str; "frame_stride" int; "fps" float (the
    clip's effective fps = source fps / stride); "key" str; "caption_fallback" bool; "skipped" {reason: count}.
    """

    logger = logger
    skip_hint = "Check the shards (python -m src.data.webvid writes valid ones) and data.num_frames/stride_range/caption_key"
    required_entries = "'mp4'/'json'"

    def __init__(
        self,
        shards: str | Sequence[str],
        *,
        num_frames: int = 16,
        stride_range: tuple[int, int] | int = (1, 6),
        size: tuple[int, int] = (256, 256),
        caption_key: str = "caption",
        **stream: Any,
    ) -> None:
        """`stream`: ShardSampleDataset's keywords (seed, resampled, shuffle_buffer, max_consecutive_skips,
        decoded_cache_mb)."""
        lo, hi = (stride_range, stride_range) if isinstance(stride_range, int) else tuple(stride_range)
        if num_frames < 1 or not 1 <= lo <= hi:
            raise ValueError(
                f"need num_frames >= 1 and 1 <= stride_range[0] <= stride_range[1], got {num_frames} and "
                f"{stride_range}; set data.num_frames / data.stride_range (or a fixed data.stride)"
            )
        super().__init__(list_shards(shards), **stream)
        self.num_frames = int(num_frames)
        self.stride_range = (int(lo), int(hi))
        self.size = (int(size[0]), int(size[1]))
        self.caption_key = str(caption_key)

    def _clip(self, total: int, rng: np.random.Generator) -> tuple[int, list[int]]:
        lo, hi = self.stride_range
        stride = fitting_stride(total, self.num_frames, int(rng.integers(lo, hi + 1)), lo)
        span = (self.num_frames - 1) * stride + 1
        start = int(rng.integers(0, total - span + 1))
        return stride, [start + i * stride for i in range(self.num_frames)]

    def _frames(self, raw: dict[str, Any], rng: np.random.Generator) -> tuple[np.ndarray, int, float]:
        """The clip's frames, its stride and the source fps (decoding only what is needed unless cached)."""
        if self.cache.enabled:
            key = f"{raw.get('__url__', '')}:{raw['__key__']}"
            cached = self.cache.get(key)
            if cached is None:
                cached = (decode_mp4(raw["mp4"]), np.array([probe_mp4(raw["mp4"]).fps]))
                self.cache.put(key, cached)
            video, fps = cached
            stride, indices = self._clip(len(video), rng)
            return video[indices], stride, float(fps[0])
        info = probe_mp4(raw["mp4"])
        stride, indices = self._clip(info.num_frames, rng)
        return decode_mp4(raw["mp4"], indices), stride, info.fps

    def process(self, raw: dict[str, Any], rng: np.random.Generator) -> dict[str, Any]:
        """Decode, sample, crop and caption one raw shard sample; raises on any defect (the caller skips it)."""
        require_entries(raw, ("mp4", "json"))
        meta = read_meta(raw["json"])
        caption, fell_back = choose_caption(meta, self.caption_key)
        frames, stride, probed_fps = self._frames(raw, rng)
        source_fps = float(meta.get("fps") or probed_fps)
        if source_fps <= 0:
            raise SampleError("no fps in the json and none in the video stream", reason="no_fps")
        return {
            "video": to_model_video(frames, self.size),
            "caption": caption,
            "frame_stride": stride,
            "fps": source_fps / stride,
            "key": raw["__key__"],
            "caption_fallback": fell_back,
        }


def collate_caption_video(samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Stack videos; captions, keys and "skipped" ({reason: count}) as lists; stride int64, fps float32,
    caption_fallback bool."""
    return {
        "video": torch.stack([s["video"] for s in samples]),
        "caption": [s["caption"] for s in samples],
        "frame_stride": torch.tensor([int(s["frame_stride"]) for s in samples], dtype=torch.int64),
        "fps": torch.tensor([float(s["fps"]) for s in samples], dtype=torch.float32),
        "key": [s["key"] for s in samples],
        "skipped": collate_skips(samples),
        "caption_fallback": torch.tensor([bool(s.get("caption_fallback", False)) for s in samples]),
    }


def stride_range_of(data: DictConfig) -> tuple[int, int] | int:
    """`data.stride` when set (a fixed stride), else `data.stride_range`."""
    fixed = data.get("stride")
    return int(fixed) if fixed else tuple(data.stride_range)


def loader_from_config(data: DictConfig, shards: str | Sequence[str], seed: int) -> ExactBatchLoader:
    """The training loader from a `data:` config (conf/data/webvid.yaml); `seed` is per rank."""
    dataset = CaptionVideoDataset(
        shards,
        num_frames=data.num_frames,
        stride_range=stride_range_of(data),
        size=tuple(data.size),
        caption_key=data.caption_key,
        **stream_settings(data, seed),
    )
    dataset.augmentation_seed = data.get("augmentation_seed")
    return ExactBatchLoader.from_config(dataset, data, seed, collate_caption_video)
