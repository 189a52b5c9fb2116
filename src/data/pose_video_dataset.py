"""Animate Anyone training pipeline: webdataset shards of (video, pose video) -> training samples.

Shard samples carry `mp4`, `pose.mp4` (frame-aligned skeleton video) and `json`. Layouts: `t h w c`
uint8 on disk; yielded samples are `c t h w` float tensors (see `PoseVideoDataset`).

Stage choice: `num_frames == 1` is the spatial stage (a reference and one target at least `margin`
frames apart); `num_frames > 1` is the temporal stage (`num_frames` targets `stride` apart, reference
drawn from the whole video). Bad samples (corrupt, too short, pose/video mismatch) are skipped, logged
and counted in the next yielded sample's "skipped" field.

Multi-rank safety: each (rank, worker) draws shards itself (resampled, the training default) or
takes a disjoint slice of them (resampled=False): webdataset's `single_node_only` splitter is never
used, and `PoseVideoLoader` yields exactly `batches_per_epoch` batches per rank, so DDP never hangs.
"""

from __future__ import annotations

import io
import json
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, IterableDataset, get_worker_info
from webdataset.tariterators import tarfile_samples

from src.data.clip_sampling import (
    sample_clip_indices,
    sample_reference_and_target,
    sample_reference_index,
)
from src.data.decoded_cache import DecodedVideoCache
from src.data.shards import list_shards
from src.data.transforms import PairedRandomResizedCrop
from src.data.video_io import VideoInfo, decode_mp4, probe_mp4

__all__ = [
    "PoseVideoDataset",
    "PoseVideoLoader",
    "SampleError",
    "TooManySkips",
    "build_loader",
    "build_pose_video_dataset",
    "collate_pose_video",
    "get_rank_and_world_size",
    "load_heldout_videos",
]

logger = logging.getLogger(__name__)


class SampleError(ValueError):
    """A shard sample that cannot be used (missing entry, pose/video mismatch); it gets skipped."""


class TooManySkips(RuntimeError):
    """Every recent sample failed: the shards are unusable, so stop instead of looping forever."""


def get_rank_and_world_size() -> tuple[int, int]:
    """Rank and world size from torch.distributed if initialised, else RANK/WORLD_SIZE, else SLURM."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    for rank_var, size_var in (("RANK", "WORLD_SIZE"), ("SLURM_PROCID", "SLURM_NTASKS")):
        if rank_var in os.environ and size_var in os.environ:
            rank, size = int(os.environ[rank_var]), int(os.environ[size_var])
            if not 0 <= rank < size:
                raise ValueError(f"{rank_var}={rank} is not in [0, {size_var}={size})")
            return rank, size
    return 0, 1


def _shuffled(items: Iterator[Any], buffer_size: int, rng: np.random.Generator) -> Iterator[Any]:
    """Buffered shuffle: keep `buffer_size` items, emit a random one as each new item arrives."""
    if buffer_size <= 1:
        yield from items
        return
    buffer: list[Any] = []
    for item in items:
        if len(buffer) < buffer_size:
            buffer.append(item)
            continue
        index = int(rng.integers(len(buffer)))
        yield buffer[index]
        buffer[index] = item
    order = rng.permutation(len(buffer))
    for index in order:
        yield buffer[index]


class _SkipGuard:
    """Counts skips since the last yield; raises TooManySkips when nothing usable turns up."""

    def __init__(self, limit: int, shards: Sequence[str], buffered: int = 0) -> None:
        self.limit = limit
        self.buffered = buffered
        self.shards = shards
        self.since_yield = 0
        self.consecutive = 0
        self.shard_opens = 0
        self.last_reasons: list[str] = []

    def skip(self, key: str, reason: str) -> None:
        logger.warning("skipping sample %s: %s", key, reason)
        self.since_yield += 1
        self.consecutive += 1
        self.last_reasons = (self.last_reasons + [f"{key}: {reason}"])[-3:]
        if self.consecutive >= self.limit:
            raise TooManySkips(
                f"{self.consecutive} consecutive samples failed in shards {list(self.shards)[:3]}"
                f"{' ...' if len(self.shards) > 3 else ''}; last reasons: {self.last_reasons}. Check the shards "
                f"(python -m src.data.make_shards writes valid ones) and data.num_frames/stride/margin"
            )

    def tar_error(self, exc: Exception) -> bool:
        """webdataset handler: a broken or missing tar counts as a skip; keep going."""
        self.skip("<tar>", f"{type(exc).__name__}: {exc}")
        return True

    def opened_shard(self) -> None:
        self.shard_opens += 1
        if self.shard_opens > max(self.limit, 2 * len(self.shards)) + self.buffered:
            raise TooManySkips(
                f"{self.shard_opens} shards were read without one usable sample (shards "
                f"{list(self.shards)[:3]}); they may be empty or hold no 'mp4'/'pose.mp4' entries"
            )

    def yielded(self) -> int:
        count = self.since_yield
        self.since_yield = self.consecutive = self.shard_opens = 0
        return count


@dataclass
class _IterState:
    epoch: int = 0
    pass_index: int = 0
    rank: int | None = None
    world_size: int | None = None


class PoseVideoDataset(IterableDataset):
    """Iterable of per-sample dicts for Animate Anyone training.

    Each sample: "pixel_values" float32 (3, T, H, W) in [-1, 1]; "pose" float32 (3, T, H, W) in [0, 1];
    "reference" float32 (3, H, W) in [-1, 1]; "key" str; "skipped" int. Random draws come from a
    numpy Generator seeded by (seed, rank, worker id, epoch, pass), so streams are reproducible.
    """

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
        seed: int = 0,
        resampled: bool = True,
        shuffle_buffer: int = 64,
        max_consecutive_skips: int = 1000,
        decoded_cache_mb: int = 0,
    ) -> None:
        super().__init__()
        if num_frames < 1 or stride < 1 or margin < 0:
            raise ValueError(
                f"need num_frames >= 1, stride >= 1 and margin >= 0, got {num_frames}, {stride}, {margin}"
            )
        if not shards:
            raise ValueError("PoseVideoDataset needs at least one shard; see src.data.shards.list_shards")
        self.shards = list(shards)
        self.num_frames = int(num_frames)
        self.stride = int(stride)
        self.margin = int(margin)
        self.size = (int(size[0]), int(size[1]))
        self.seed = int(seed)
        self.resampled = bool(resampled)
        self.shuffle_buffer = int(shuffle_buffer)
        self.max_consecutive_skips = int(max_consecutive_skips)
        self.transform = PairedRandomResizedCrop(self.size, crop_scale, crop_ratio)
        self.state = _IterState()
        self.cache = DecodedVideoCache(int(decoded_cache_mb) * 2**20)

    def set_state(
        self, *, epoch: int, pass_index: int = 0, rank: int | None = None, world_size: int | None = None
    ) -> None:
        """Fix the epoch (and pass, rank) for the next iteration; the loader calls this in the main process."""
        self.state = _IterState(epoch, pass_index, rank, world_size)

    def set_epoch(self, epoch: int) -> None:
        self.state = _IterState(epoch, 0, self.state.rank, self.state.world_size)

    # -- stream construction -------------------------------------------------------------------
    def _slot(self) -> tuple[int, int, int, int]:
        rank, world = self.state.rank, self.state.world_size
        if rank is None or world is None:
            rank, world = get_rank_and_world_size()
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        return rank, world, worker, workers

    def _urls(self, rng: np.random.Generator, slot: int, slots: int, guard: _SkipGuard) -> Iterator[dict]:
        if self.resampled:
            while True:
                guard.opened_shard()
                yield {"url": self.shards[int(rng.integers(len(self.shards)))]}
        order_rng = np.random.default_rng([self.seed, self.state.epoch, self.state.pass_index])
        shards = [self.shards[i] for i in order_rng.permutation(len(self.shards))]
        mine = shards[slot::slots] if len(shards) >= slots else shards
        for url in mine:
            guard.opened_shard()
            yield {"url": url}

    def _raw_samples(self, rng: np.random.Generator, guard: _SkipGuard) -> Iterator[dict]:
        rank, world, worker, workers = self._slot()
        slot, slots = rank * workers + worker, world * workers
        samples = tarfile_samples(self._urls(rng, slot, slots, guard), handler=guard.tar_error)
        if not self.resampled and len(self.shards) < slots:
            # fewer shards than (rank, worker) slots: every slot reads all shards, keeps every slots-th sample
            samples = (s for i, s in enumerate(samples) if i % slots == slot)
        return _shuffled(samples, self.shuffle_buffer, rng)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        rank, world, worker, _ = self._slot()
        rng = np.random.default_rng([self.seed, rank, worker, self.state.epoch, self.state.pass_index])
        guard = _SkipGuard(self.max_consecutive_skips, self.shards, buffered=max(self.shuffle_buffer, 0))
        for raw in self._raw_samples(rng, guard):
            key = str(raw.get("__key__", "<no key>"))
            try:
                sample = self.process(raw, rng)
            except Exception as exc:  # a bad sample must never stop the epoch; TooManySkips bounds this
                guard.skip(f"{key} ({raw.get('__url__', '?')})", f"{type(exc).__name__}: {exc}")
                continue
            sample["skipped"] = guard.yielded()
            yield sample
        if guard.since_yield:
            logger.warning(
                "%d skipped samples at the end of a finite pass were not reported in a batch",
                guard.since_yield,
            )

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
                f"pose video has {pose_info.num_frames} frames but the video has {video_info.num_frames}"
            )
        if (video_info.height, video_info.width) != (pose_info.height, pose_info.width):
            raise SampleError(
                f"pose video is {pose_info.height}x{pose_info.width} but the video is "
                f"{video_info.height}x{video_info.width}"
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
        for entry in ("mp4", "pose.mp4"):
            if entry not in raw:
                raise SampleError(
                    f"missing '{entry}' entry (has {sorted(k for k in raw if not k.startswith('__'))})"
                )
        if self.cache.enabled:
            frames, pose, reference = self._from_cache(raw, rng)
        else:
            frames, pose, reference = self._decode_needed(raw, rng)
        reference_t, pixel_values, pose_t = self.transform(reference, frames, pose, rng)
        return {"pixel_values": pixel_values, "pose": pose_t, "reference": reference_t, "key": raw["__key__"]}


def build_pose_video_dataset(
    shards: str | Sequence[str],
    *,
    num_frames: int,
    stride: int = 4,
    margin: int = 30,
    size: tuple[int, int] = (512, 512),
    crop_scale: tuple[float, float] = (0.9, 1.0),
    crop_ratio: tuple[float, float] = (0.9, 1.0),
    seed: int = 0,
    resampled: bool = True,
    shuffle_buffer: int = 64,
    max_consecutive_skips: int = 1000,
    decoded_cache_mb: int = 0,
) -> PoseVideoDataset:
    """Resolve `shards` (folder, glob, brace pattern or list) and build the training dataset."""
    return PoseVideoDataset(
        list_shards(shards),
        num_frames=num_frames,
        stride=stride,
        margin=margin,
        size=tuple(size),
        crop_scale=tuple(crop_scale),
        crop_ratio=tuple(crop_ratio),
        seed=seed,
        resampled=resampled,
        shuffle_buffer=shuffle_buffer,
        max_consecutive_skips=max_consecutive_skips,
        decoded_cache_mb=decoded_cache_mb,
    )


def collate_pose_video(samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Stack tensors, keep keys as a list and make "skipped" an int64 tensor (one entry per sample)."""
    return {
        "pixel_values": torch.stack([s["pixel_values"] for s in samples]),
        "pose": torch.stack([s["pose"] for s in samples]),
        "reference": torch.stack([s["reference"] for s in samples]),
        "key": [s["key"] for s in samples],
        "skipped": torch.tensor([int(s["skipped"]) for s in samples], dtype=torch.int64),
    }


class PoseVideoLoader:
    """Yields exactly `batches_per_epoch` batches per rank and epoch (so DDP ranks stay in step).

    Each epoch builds a fresh DataLoader after fixing the dataset's epoch, rank and world size in
    the main process. A finite (resampled=False) stream that runs dry is restarted as a new pass.
    """

    def __init__(
        self,
        dataset: PoseVideoDataset,
        *,
        batch_size: int,
        num_workers: int,
        batches_per_epoch: int,
        seed: int,
        pin_memory: bool = False,
    ) -> None:
        if batch_size < 1 or batches_per_epoch < 1 or num_workers < 0:
            raise ValueError(
                f"need batch_size >= 1, batches_per_epoch >= 1 and num_workers >= 0, got {batch_size}, "
                f"{batches_per_epoch}, {num_workers}"
            )
        self.dataset = dataset
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.batches_per_epoch = batches_per_epoch
        self.seed = seed
        self.pin_memory = pin_memory
        self.epoch = 0

    def __len__(self) -> int:
        return self.batches_per_epoch

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch of the next iteration (e.g. when resuming); otherwise it counts up."""
        self.epoch = int(epoch)

    def _pass(self, epoch: int, pass_index: int, rank: int, world: int) -> DataLoader:
        self.dataset.set_state(epoch=epoch, pass_index=pass_index, rank=rank, world_size=world)
        state = np.random.SeedSequence([self.seed, rank, epoch, pass_index]).generate_state(1)[0]
        generator = torch.Generator().manual_seed(int(state))
        return DataLoader(
            self.dataset,
            batch_size=self.batch_size,
            num_workers=self.num_workers,
            collate_fn=collate_pose_video,
            drop_last=True,
            pin_memory=self.pin_memory,
            generator=generator,
        )

    def __iter__(self) -> Iterator[dict[str, Any]]:
        epoch = self.epoch
        self.epoch += 1
        rank, world = get_rank_and_world_size()
        produced, pass_index = 0, 0
        while produced < self.batches_per_epoch:
            batches = iter(self._pass(epoch, pass_index, rank, world))
            got = 0
            try:
                for batch in batches:
                    yield batch
                    produced += 1
                    got += 1
                    if produced == self.batches_per_epoch:
                        break
            finally:
                del batches  # shuts the workers of this pass down
            if got == 0:
                raise RuntimeError(
                    f"rank {rank} got no complete batch of {self.batch_size} from {len(self.dataset.shards)} "
                    f"shard(s) in a whole pass; use resampled=True, a smaller batch size, or more data"
                )
            pass_index += 1


def build_loader(
    dataset: PoseVideoDataset,
    *,
    batch_size: int,
    num_workers: int,
    batches_per_epoch: int,
    seed: int,
    pin_memory: bool = False,
) -> PoseVideoLoader:
    """A loader yielding exactly `batches_per_epoch` collated batches per rank and epoch."""
    return PoseVideoLoader(
        dataset,
        batch_size=batch_size,
        num_workers=num_workers,
        batches_per_epoch=batches_per_epoch,
        seed=seed,
        pin_memory=pin_memory,
    )


def load_heldout_videos(
    shards: str | Sequence[str], max_videos: int | None = None, *, strict: bool = True
) -> list[dict[str, Any]]:
    """Fully decode held-out samples, in shard order, for evaluation.

    Each dict: "key", "frames" (T, H, W, 3) uint8, "pose" (T, H, W, 3) uint8 or None, "meta" (json dict),
    plus the arrays of `mask.npz` ("silhouette", "background") when present. With strict=True a bad
    sample raises (an evaluation set must not shrink silently); with `strict` off it is logged and skipped.
    """
    paths = list_shards(shards)
    videos: list[dict[str, Any]] = []
    for raw in tarfile_samples({"url": p} for p in paths):
        if max_videos is not None and len(videos) >= max_videos:
            break
        key = raw["__key__"]
        try:
            if "mp4" not in raw:
                raise SampleError(f"held-out sample {key} in {raw.get('__url__')} has no 'mp4' entry")
            video: dict[str, Any] = {"key": key, "frames": decode_mp4(raw["mp4"])}
            video["pose"] = decode_mp4(raw["pose.mp4"]) if "pose.mp4" in raw else None
            if video["pose"] is not None and len(video["pose"]) != len(video["frames"]):
                raise SampleError(
                    f"held-out sample {key}: pose has {len(video['pose'])} frames, video {len(video['frames'])}"
                )
            video["meta"] = json.loads(raw["json"]) if "json" in raw else {}
            if "mask.npz" in raw:
                with np.load(io.BytesIO(raw["mask.npz"])) as masks:
                    video.update({name: masks[name] for name in masks.files})
        except Exception as exc:
            if strict:
                raise SampleError(
                    f"cannot load held-out sample {key} from {raw.get('__url__')}: {exc}"
                ) from exc
            logger.warning("skipping held-out sample %s: %s", key, exc)
            continue
        videos.append(video)
    return videos
