"""The scoring pass: read generated and real clips by name, feed every metric what it consumes, count skips.

Clips are `(T, C, H, W)` uint8 after `read_clip` + `resize_clip`; batches of them, `(B, T, C, H, W)`, go to
the metrics' `update()`. Generated videos (this shard's names) feed the generated side of every metric;
real clips (this shard's real names) feed the real side of unpaired metrics (FVD, KVD). Paired and
conditioned metrics read the real clip of the same name. Unreadable or too-short videos are skipped and
listed in the counts (which end up in metrics.json), never dropped silently.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from src.eval.metric_setup import ConfiguredMetric
from src.eval.reference_frame import drop_frame
from src.eval.video_sources import BadVideoError, ClipSpec, ResizeMode, VideoSource, read_clip, resize_clip

log = logging.getLogger(__name__)
_MAX_LISTED_SKIPS = 200


@dataclass
class ScoringSettings:
    """How clips are cut and sized (from eval.clip, eval.generated_clip, eval.resolution, eval.resize)."""

    real_clip: ClipSpec
    generated_clip: ClipSpec
    resolution: tuple[int, int] | None
    resize: ResizeMode
    batch_size: int = 8
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    progress: bool = True


def new_counts() -> dict[str, Any]:
    """Counts a shard reports; merged across shards by `merge_counts`."""
    return {"generated": 0, "real": 0, "paired": 0, "missing_real": 0, "missing_prompts": 0,
            "skipped": {"generated": 0, "real": 0}, "skipped_videos": []}


def merge_counts(parts: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Sum the integer counts of several shards and concatenate their skip lists."""
    total = new_counts()
    for part in parts:
        for key in ("generated", "real", "paired", "missing_real", "missing_prompts"):
            total[key] += int(part.get(key, 0))
        for side in ("generated", "real"):
            total["skipped"][side] += int(part.get("skipped", {}).get(side, 0))
        total["skipped_videos"].extend(part.get("skipped_videos", []))
    total["skipped_videos"] = total["skipped_videos"][:_MAX_LISTED_SKIPS]
    return total


def _skip(counts: dict, side: str, key: str, reason: str) -> None:
    counts["skipped"][side] += 1
    if len(counts["skipped_videos"]) < _MAX_LISTED_SKIPS:
        counts["skipped_videos"].append({"side": side, "key": key, "reason": reason})
    log.warning("skipping %s video %r: %s", side, key, reason)


def _load(source: VideoSource, key: str, clip: ClipSpec, settings: ScoringSettings) -> Tensor:
    frames = read_clip(source.read(key), clip, key)
    return resize_clip(frames, settings.resolution, settings.resize)


def _same_shape_groups(items: list[dict], field_name: str) -> list[list[dict]]:
    """Consecutive runs of items whose `field_name` tensors share a shape (so they stack into a batch)."""
    groups: list[list[dict]] = []
    for item in items:
        if groups and groups[-1][0][field_name].shape == item[field_name].shape:
            groups[-1].append(item)
        else:
            groups.append([item])
    return groups


def _align_pair(generated: Tensor, real: Tensor) -> tuple[Tensor, Tensor]:
    """Same frame count (the shorter) and the real clip's size for the generated one (DisCo resizes)."""
    t = min(generated.shape[0], real.shape[0])
    generated, real = generated[:t], real[:t]
    if generated.shape[-2:] != real.shape[-2:]:
        generated = resize_clip(generated, tuple(real.shape[-2:]), "resize")
    return generated, real


def _stack(group: list[dict], name: str, device: torch.device) -> Tensor:
    return torch.stack([item[name] for item in group]).to(device)


def _update_generated(metrics: Mapping[str, ConfiguredMetric], items: list[dict], device: torch.device) -> None:
    for group in _same_shape_groups(items, "video"):
        videos = _stack(group, "video", device)
        for m in metrics.values():
            if m.inputs == "unpaired":
                m.metric.update(videos, real=False)
            elif m.inputs == "generated":
                m.metric.update(videos)
            elif m.inputs == "prompted":
                prompted = [i for i, item in enumerate(group) if item.get("prompts") is not None]
                if prompted:
                    m.metric.update(
                        videos[prompted],
                        [group[i]["prompts"]["source_prompt"] for i in prompted],
                        [group[i]["prompts"]["target_prompt"] for i in prompted],
                    )
    pairs = [item for item in items if item.get("real") is not None]
    if not pairs:
        return
    aligned = []
    for item in pairs:
        gen, real = _align_pair(item["video"], item["real"])
        aligned.append({"video": gen, "real": real})
    for group in _same_shape_groups(aligned, "real"):
        gen, real = _stack(group, "video", device), _stack(group, "real", device)
        for m in metrics.values():
            if m.inputs == "paired":
                m.metric.update(drop_frame(gen, m.drop_frame), drop_frame(real, m.drop_frame))
            elif m.inputs == "conditioned":
                m.metric.update(gen, real[:, 0])


def _update_real(metrics: Mapping[str, ConfiguredMetric], items: list[dict], device: torch.device) -> None:
    for group in _same_shape_groups(items, "video"):
        videos = _stack(group, "video", device)
        for m in metrics.values():
            if m.inputs == "unpaired":
                m.metric.update(videos, real=True)


def _batched(keys: Sequence[str], size: int, desc: str, progress: bool) -> Any:
    bar = tqdm(total=len(keys), desc=desc, disable=not progress, unit="video")
    for start in range(0, len(keys), size):
        yield keys[start : start + size]
        bar.update(min(size, len(keys) - start))
    bar.close()


def score_shard(
    metrics: Mapping[str, ConfiguredMetric],
    generated: VideoSource,
    generated_keys: Sequence[str],
    real: VideoSource | None,
    real_keys: Sequence[str],
    settings: ScoringSettings,
    prompts: Mapping[str, Mapping[str, str]] | None = None,
    on_batch: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """Update `metrics` with this shard's generated and real videos; returns the shard's counts."""
    counts = new_counts()
    kinds = {m.inputs for m in metrics.values()}
    needs_pair = bool(kinds & {"paired", "conditioned"})
    needs_prompts = "prompted" in kinds
    if needs_pair and real is None:
        raise ValueError(
            "this protocol has paired/conditioned metrics but no real videos: set eval.real_dir or eval.real_shards"
        )
    real_names = set(real.keys()) if real is not None else set()
    for keys in _batched(list(generated_keys), settings.batch_size, "generated", settings.progress):
        items = []
        for key in keys:
            try:
                item: dict[str, Any] = {"key": key, "video": _load(generated, key, settings.generated_clip, settings)}
            except BadVideoError as error:
                _skip(counts, "generated", key, str(error))
                continue
            if needs_pair:
                if key not in real_names:
                    counts["missing_real"] += 1
                    log.warning("generated video %r has no real video of the same name; paired metrics skip it", key)
                else:
                    try:
                        item["real"] = _load(real, key, settings.real_clip, settings)
                        counts["paired"] += 1
                    except BadVideoError as error:
                        _skip(counts, "real", key, str(error))
            if needs_prompts:
                item["prompts"] = (prompts or {}).get(key)
                if item["prompts"] is None:
                    counts["missing_prompts"] += 1
                    log.warning("generated video %r has no entry in eval.prompts_file; Fram-Acc skips it", key)
            items.append(item)
            counts["generated"] += 1
        if items:
            _update_generated(metrics, items, settings.device)
        if on_batch:
            on_batch()
    if "unpaired" in kinds:
        if real is None:
            raise ValueError("FVD/KVD need real videos: set eval.real_dir or eval.real_shards")
        for keys in _batched(list(real_keys), settings.batch_size, "real", settings.progress):
            items = []
            for key in keys:
                try:
                    items.append({"key": key, "video": _load(real, key, settings.real_clip, settings)})
                    counts["real"] += 1
                except BadVideoError as error:
                    _skip(counts, "real", key, str(error))
            if items:
                _update_real(metrics, items, settings.device)
    return counts
