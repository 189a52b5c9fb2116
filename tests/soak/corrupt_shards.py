"""A shard set (and the matching folders of videos) where 5% of the samples are broken in eight planted ways.

Each sample is `mp4` + `pose.mp4` + `json` (fps, caption). The broken ones, one kind in each of the first eight
blocks of 20 (or `block`): truncated mp4, zero-byte mp4, pose video shorter than the video, missing json, json
of the wrong type, pose at another resolution, a 1-frame video (and pose), a non-video file named .mp4. The
tables below say which skip reason each kind must produce in each tool, so the soak can check the counts
exactly.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np

from src.data.shards import write_shards
from src.data.video_io import encode_mp4

KINDS = ("truncated", "zero_byte", "pose_short", "no_json", "json_type", "pose_resolution", "one_frame",
         "not_video")
FRAMES, SIZE, FPS = 8, 16, 8.0

# the reason each planted kind is counted under, per tool (absent: the tool does not read that part: a good sample)
AA_TRAIN = {"truncated": "undecodable", "not_video": "undecodable", "zero_byte": "empty", "pose_short": "pose_length",
            "pose_resolution": "pose_resolution", "one_frame": "too_short"}
DC_TRAIN = {"truncated": "undecodable", "not_video": "undecodable", "zero_byte": "empty", "no_json": "missing_json",
            "json_type": "bad_json", "one_frame": "too_short"}
MAKE_SHARDS = AA_TRAIN  # it probes video + pose and writes its own json
WEBVID = {"truncated": "undecodable", "not_video": "undecodable", "zero_byte": "empty", "one_frame": "too_short"}
RECAPTION = {"no_json": "missing_json", "json_type": "bad_json"}
EVALUATE = WEBVID  # generated videos only


def expected_counts(planted: dict[str, str], table: dict[str, str]) -> dict[str, int]:
    """{reason: count} a tool reading the samples `table` describes must report for the `planted` kinds."""
    return dict(Counter(table[kind] for kind in planted.values() if kind in table))


def _video(seed: int, frames: int = FRAMES, size: int = SIZE) -> bytes:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, (1, size, size, 3), dtype=np.uint8)
    shift = np.arange(frames, dtype=np.uint8)[:, None, None, None] * 8
    return encode_mp4((base + shift).astype(np.uint8), FPS, crf=30, preset="ultrafast")


def build_samples(total: int = 160, block: int = 20, at: int = 7) -> tuple[list[dict], dict[str, str]]:
    """`total` samples (a multiple of `block`); sample `at` of each of the first eight blocks is broken, one kind
    per block (5% with the defaults). Returns them and {key: planted kind} of the broken ones."""
    assert total % block == 0 and 0 <= at < block, "one of each of the 8 kinds per 160 samples is 5%"
    good_pose = _video(1)
    samples, planted = [], {}
    for i in range(total):
        key = f"clip_{i:04d}"
        kind = KINDS[i // block] if i % block == at and i // block < len(KINDS) else None
        video, pose = _video(100 + i), good_pose
        meta: object = {"fps": FPS, "caption": f"a moving square {i}"}
        if kind == "truncated":
            video = video[: len(video) // 2]
        elif kind == "zero_byte":
            video = b""
        elif kind == "pose_short":
            pose = _video(1, frames=FRAMES - 3)
        elif kind == "json_type":
            meta = ["fps", FPS]
        elif kind == "pose_resolution":
            pose = _video(1, size=SIZE * 2)
        elif kind == "one_frame":
            video, pose = _video(100 + i, frames=1), _video(1, frames=1)
        elif kind == "not_video":
            video = b"this is a text file, not an mp4\n" * 4
        sample = {"__key__": key, "mp4": video, "pose.mp4": pose}
        if kind != "no_json":
            sample["json"] = json.dumps(meta).encode()
        samples.append(sample)
        if kind:
            planted[key] = kind
    return samples, planted


def write_soak_shards(out: Path, total: int = 160, block: int = 20, at: int = 7) -> dict[str, str]:
    samples, planted = build_samples(total, block, at)
    write_shards(samples, out, prefix="soak", maxcount=40)
    return planted


def write_soak_folders(videos: Path, total: int = 160) -> dict[str, str]:
    """The same samples as files: `videos/<key>.mp4`, `videos_dwpose/<key>.mp4` (make_shards / eval layout)."""
    samples, planted = build_samples(total)
    poses = videos.parent / f"{videos.name}_dwpose"
    videos.mkdir(parents=True, exist_ok=True)
    poses.mkdir(parents=True, exist_ok=True)
    for sample in samples:
        (videos / f"{sample['__key__']}.mp4").write_bytes(sample["mp4"])
        (poses / f"{sample['__key__']}.mp4").write_bytes(sample["pose.mp4"])
    return planted


def write_real_folder(folder: Path, total: int = 160) -> None:
    """Intact ground-truth videos under the same names (what generated videos are scored against)."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(total):
        (folder / f"clip_{i:04d}.mp4").write_bytes(_video(100 + i))
