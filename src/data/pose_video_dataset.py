"""Animate Anyone training pipeline: webdataset shards of (video, pose video) -> training samples.

Shard samples carry `mp4`, `pose.mp4` (frame-aligned skeleton video) and `json`. Layouts: `t h w c`
uint8 on disk; yielded samples are `c t h w` float tensors (see `PoseVideoDataset`).

Stage choice: `num_frames == 1` is the spatial stage (a reference and one target at least `margin`
frames apart); `num_frames > 1` is the temporal stage (`num_frames` targets `stride` apart, reference
drawn from the whole video). Bad samples (corrupt, too short, pose/video mismatch) are skipped, logged
and counted in the next yielded sample's "skipped" field.

Streaming, rank split, skip guard and exact per-rank batch counts are shared with the other pipelines
(src.data.sample_stream); this module only knows how one pose-video sample is decoded and cropped.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig
from webdataset.tariterators import tarfile_samples

from src.data.clip_sampling import (
    sample_clip_indices,
    sample_reference_and_target,
    sample_reference_index,
)
from src.data.sample_stream import (
    ExactBatchLoader,
    SampleError,
    ShardSampleDataset,
    TooManySkips,
    collate_skips,
    get_rank_and_world_size,
    require_entries,
    stream_settings,
)
from src.data.shards import list_shards
from src.data.transforms import PairedRandomResizedCrop
from src.data.video_io import VideoInfo, decode_mp4, probe_mp4

__all__ = [
    "PoseVideoDataset",
    "SampleError",
    "TooManySkips",
    "build_loader",
    "build_pose_video_dataset",
    "collate_pose_video",
    "get_rank_and_world_size",
    "iter_heldout_videos",
    "load_heldout_videos",
    "loader_from_config",
]

logger = logging.getLogger(__name__)


class PoseVideoDataset(ShardSampleDataset):
    """Iterable of per-sample dicts for Animate Anyone training.

    Each sample: "pixel_values" float32 (3, T, H, W) in [-1, 1]; "pose" float32 (3, T, H, W) in [0, 1];
    "reference" float32 (3, H, W) in [-1, 1]; "key" str; "skipped" {reason: count}. Random draws come from a
    numpy Generator seeded by (seed, rank, worker id, epoch, pass), so streams are reproducible.
    """

    logger = logger
    skip_hint = "Check the shards (python -m src.data.make_shards writes valid ones) and data.num_frames/stride/margin"
    required_entries = "'mp4'/'pose.mp4'"

    def __init__(
        self,
        shards: Sequence[str],
        *,
        num_frames: int,
        stride: int = 4,
        margin: int = 30,
        size: tuple[int, int] = (512, 512),
        crop_scale: tuple[float, float] = (0.9, 1.0),
        crop_ratio: tuple[float, float] = (0.9, 1.0),
        **stream: Any,
    ) -> None:
        """`stream`: ShardSampleDataset's keywords (seed, resampled, shuffle_buffer, max_consecutive_skips,
        decoded_cache_mb)."""
        if num_frames < 1 or stride < 1 or margin < 0:
            raise ValueError(
                f"need num_frames >= 1, stride >= 1 and margin >= 0, got {num_frames}, {stride}, {margin}"
            )
        super().__init__(shards, **stream)
        self.num_frames = int(num_frames)
        self.stride = int(stride)
        self.margin = int(margin)
        self.size = (int(size[0]), int(size[1]))
        self.transform = PairedRandomResizedCrop(self.size, crop_scale, crop_ratio)

    # -- one sample ----------------------------------------------------------------------------
    def _frame_indices(self, num_frames: int, rng: np.random.Generator) -> tuple[int, list[int]]:
        if self.num_frames == 1:
            reference, target = sample_reference_and_target(num_frames, self.margin, rng)
            return reference, [target]
        targets = sample_clip_indices(num_frames, self.num_frames, self.stride, rng)
        return sample_reference_index(num_frames, rng), targets

    @staticmethod
    def _check_pair(video_info, pose_info) -> None:
        if video_info.num_frames != pose_info.num_frames:
            raise SampleError(
                f"pose video has {pose_info.num_frames} frames but the video has {video_info.num_frames}",
                reason="pose_length",
            )
        if (video_info.height, video_info.width) != (pose_info.height, pose_info.width):
            raise SampleError(
                f"pose video is {pose_info.height}x{pose_info.width} but the video is "
                f"{video_info.height}x{video_info.width}",
                reason="pose_resolution",
            )

    def _decode_needed(self, raw: dict[str, Any], rng: np.random.Generator):
        """Decodes only up to the last frame this sample needs (long videos, large datasets)."""
        video_info, pose_info = probe_mp4(raw["mp4"]), probe_mp4(raw["pose.mp4"])
        self._check_pair(video_info, pose_info)
        reference_index, targets = self._frame_indices(video_info.num_frames, rng)
        wanted = sorted(set(targets) | {reference_index})
        decoded = decode_mp4(raw["mp4"], wanted)
        position = {index: i for i, index in enumerate(wanted)}
        frames = decoded[[position[i] for i in targets]]
        reference = decoded[position[reference_index]]
        pose = decode_mp4(raw["pose.mp4"], targets)
        return frames, pose, reference

    def _from_cache(self, raw: dict[str, Any], rng: np.random.Generator):
        """Decodes the whole video once and serves later draws from memory (data.decoded_cache_mb)."""
        key = f"{raw.get('__url__', '')}:{raw['__key__']}"
        cached = self.cache.get(key)
        if cached is None:
            video, pose = decode_mp4(raw["mp4"]), decode_mp4(raw["pose.mp4"])
            self._check_pair(
                VideoInfo(len(video), 0.0, video.shape[1], video.shape[2]),
                VideoInfo(len(pose), 0.0, pose.shape[1], pose.shape[2]),
            )
            cached = (video, pose)
            self.cache.put(key, cached)
        video, pose = cached
        reference_index, targets = self._frame_indices(len(video), rng)
        return video[targets], pose[targets], video[reference_index]

    def process(self, raw: dict[str, Any], rng: np.random.Generator) -> dict[str, Any]:
        """Decode, sample and crop one raw shard sample; raises on any defect (the caller skips it)."""
        require_entries(raw, ("mp4", "pose.mp4"))
        if self.cache.enabled:
            frames, pose, reference = self._from_cache(raw, rng)
        else:
            frames, pose, reference = self._decode_needed(raw, rng)
        reference_t, pixel_values, pose_t = self.transform(reference, frames, pose, rng)
        return {"pixel_values": pixel_values, "pose": pose_t, "reference": reference_t, "key": raw["__key__"]}


def build_pose_video_dataset(shards: str | Sequence[str], **settings: Any) -> PoseVideoDataset:
    """Resolve `shards` (folder, glob, brace pattern or list) and build the training dataset (`settings`:
    PoseVideoDataset's keywords)."""
    return PoseVideoDataset(list_shards(shards), **settings)


def collate_pose_video(samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Stack tensors; keys and "skipped" ({reason: count} per sample) as lists."""
    return {
        "pixel_values": torch.stack([s["pixel_values"] for s in samples]),
        "pose": torch.stack([s["pose"] for s in samples]),
        "reference": torch.stack([s["reference"] for s in samples]),
        "key": [s["key"] for s in samples],
        "skipped": collate_skips(samples),
    }


def build_loader(dataset: PoseVideoDataset, **settings: Any) -> ExactBatchLoader:
    """A loader yielding exactly `batches_per_epoch` collated pose-video batches per rank and epoch (`settings`:
    ExactBatchLoader's keywords but collate_fn)."""
    return ExactBatchLoader(dataset, collate_fn=collate_pose_video, **settings)


def loader_from_config(data: DictConfig, shards: str | Sequence[str], seed: int) -> ExactBatchLoader:
    """The training loader from a `data:` config (conf/data/animate_anyone.yaml); `seed` is per rank."""
    dataset = build_pose_video_dataset(
        shards,
        num_frames=data.num_frames,
        stride=data.stride,
        margin=data.margin,
        size=tuple(data.size),
        crop_scale=tuple(data.crop_scale),
        crop_ratio=tuple(data.crop_ratio),
        **stream_settings(data, seed),
    )
    dataset.augmentation_seed = data.get("augmentation_seed")
    return ExactBatchLoader.from_config(dataset, data, seed, collate_pose_video)


def load_heldout_videos(
    shards: str | Sequence[str],
    max_videos: int | None = None,
    *,
    strict: bool = True,
    frame_indices: Sequence[int] | None = None,
) -> list[dict[str, Any]]:
    """`iter_heldout_videos` as a list."""
    return list(iter_heldout_videos(shards, max_videos, strict=strict, frame_indices=frame_indices))


def _decode_rows(data: bytes, rows: list[int]) -> np.ndarray:
    return decode_mp4(data, rows) if rows else np.zeros((0, 1, 1, 3), np.uint8)


def iter_heldout_videos(
    shards: str | Sequence[str],
    max_videos: int | None = None,
    *,
    strict: bool = True,
    frame_indices: Sequence[int] | None = None,
) -> Iterator[dict[str, Any]]:
    """Decode held-out samples, in shard order, for evaluation, one at a time.

    Each dict: "key", "frames" (T, H, W, 3) uint8, "pose" (T, H, W, 3) uint8 or None, "meta" (json dict),
    plus the arrays of `mask.npz` ("silhouette", "background") when present. With strict=True a bad
    sample raises (an evaluation set must not shrink silently); with `strict` off it is logged and skipped.
    `frame_indices` (sorted, unique): decode only those source frames (with decode_mp4's seeking, so a protocol
    scoring 16 frames of a 300-frame video decodes about that many, not all 300); the rows of "frames", "pose"
    and "silhouette" are then those frames (the ones that exist), "frame_indices" lists them and
    "num_source_frames" is the video's length (read from the container, not decoded).
    """
    if frame_indices is not None and list(frame_indices) != sorted(set(frame_indices)):
        raise ValueError(f"frame_indices must be sorted and unique, got {list(frame_indices)}")
    paths = list_shards(shards)
    count = 0
    for raw in tarfile_samples({"url": p} for p in paths):
        if max_videos is not None and count >= max_videos:
            break
        key = raw["__key__"]
        try:
            if "mp4" not in raw:
                raise SampleError(f"held-out sample {key} in {raw.get('__url__')} has no 'mp4' entry")
            if frame_indices is None:
                video: dict[str, Any] = {"key": key, "frames": decode_mp4(raw["mp4"])}
                video["pose"] = decode_mp4(raw["pose.mp4"]) if "pose.mp4" in raw else None
                total = len(video["frames"])
                pose_total = None if video["pose"] is None else len(video["pose"])
            else:
                total = probe_mp4(raw["mp4"]).num_frames
                pose_total = probe_mp4(raw["pose.mp4"]).num_frames if "pose.mp4" in raw else None
                # the wanted frames that exist: a too-short video is HeldoutClips' clear error, not a decode error
                rows = [i for i in frame_indices if i < total]
                video = {"key": key, "frames": _decode_rows(raw["mp4"], rows), "frame_indices": rows}
                video["pose"] = _decode_rows(raw["pose.mp4"], rows) if pose_total == total else None
                video["num_source_frames"] = total
            if pose_total is not None and pose_total != total:
                raise SampleError(f"held-out sample {key}: pose has {pose_total} frames, video {total}")
            video["meta"] = json.loads(raw["json"]) if "json" in raw else {}
            if "mask.npz" in raw:
                with np.load(io.BytesIO(raw["mask.npz"])) as masks:
                    video.update({name: masks[name] for name in masks.files})
                if frame_indices is not None and "silhouette" in video:
                    video["silhouette"] = video["silhouette"][video["frame_indices"]]
        except Exception as exc:
            if strict:
                raise SampleError(
                    f"cannot load held-out sample {key} from {raw.get('__url__')}: {exc}"
                ) from exc
            logger.warning("skipping held-out sample %s: %s", key, exc)
            continue
        count += 1
        yield video
