"""The embedded DynamiCrafter demo dataset: procedural captioned clips (src.data.demo_scenes) as caption-video shards.

`ensure_caption_demo_shards` renders the clips once (deterministic in its arguments), writes train and held-out
shard sets in the caption-video format (`mp4` + `json` with caption, motion_caption, scene_caption, fps, ...)
under `<root>/demo-<hash of the arguments>/`, and reuses them on later calls. Held-out clips use scene seeds
that never occur in training; both splits are balanced over the motions. Frames are `t h w c` uint8 on disk.

    python -m src.data.caption_demo --root data_cache/dynamicrafter_demo
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from src.data.demo_cache import COMMON_INTS, DemoShards, demo_parser, describe_shards, ensure_generated
from src.data.demo_scenes import MOTIONS, clip_motion, render_scene_clip
from src.data.shards import ShardSetWriter
from src.data.video_io import encode_mp4

__all__ = ["caption_demo_seeds", "ensure_caption_demo_shards", "main"]

FORMAT_VERSION = 2  # 2: encoded reproducibly (video_io.encode_mp4 deterministic=True)
DEMO_CRF = 10
_SEED_BLOCK = 1_000_000  # dataset seed s owns [s * block, (s + 1) * block): train half, held-out half


def _balanced(start: int, stop: int, count: int) -> list[int]:
    """`count` seeds from [start, stop), taken in order, at most ceil(count / #motions) per motion."""
    per_motion = -(-count // len(MOTIONS))
    taken: dict[str, int] = {}
    seeds: list[int] = []
    for seed in range(start, stop):
        motion = clip_motion(seed)
        if taken.get(motion, 0) < per_motion:
            taken[motion] = taken.get(motion, 0) + 1
            seeds.append(seed)
            if len(seeds) == count:
                return seeds
    raise ValueError(f"could not draw {count} motion-balanced seeds from [{start}, {stop})")


def caption_demo_seeds(seed: int, num_train: int, num_heldout: int) -> dict[str, list[int]]:
    """Scene seeds per split; held-out ones are disjoint from training ones by construction."""
    half = _SEED_BLOCK // 2
    if seed < 0 or not 1 <= num_train <= half // 4 or not 1 <= num_heldout <= half // 4:
        raise ValueError(
            f"need seed >= 0 and 1..{half // 4} videos per split, got {seed}, {num_train}, {num_heldout}"
        )
    base = seed * _SEED_BLOCK
    return {
        "train": _balanced(base, base + half, num_train),
        "heldout": _balanced(base + half, base + 2 * half, num_heldout),
    }


def _sample(key: str, seed: int, args: dict[str, Any], split: str) -> dict[str, Any]:
    clip = render_scene_clip(seed, args["num_frames"], args["height"], args["width"], fps=args["fps"])
    meta = {
        "videoid": key,
        "caption": clip.caption,
        "motion_caption": clip.motion_caption,
        "scene_caption": clip.scene_caption,
        "num_frames": int(clip.frames.shape[0]),
        "fps": float(args["fps"]),
        "height": int(clip.frames.shape[1]),
        "width": int(clip.frames.shape[2]),
        "source": "demo",
        "split": split,
        "scene_seed": seed,
        "motion": clip.meta["motion"],
    }
    frames = encode_mp4(clip.frames, args["fps"], crf=DEMO_CRF, pix_fmt="yuv444p")
    return {"__key__": key, "mp4": frames, "json": meta}


def ensure_caption_demo_shards(
    root: str | Path,
    *,
    num_train_videos: int = 176,
    num_heldout_videos: int = 8,
    num_frames: int = 24,
    height: int = 32,
    width: int = 32,
    fps: int = 8,
    seed: int = 0,
    samples_per_shard: int = 64,
) -> DemoShards:
    """Return the caption demo shards for these arguments, generating them atomically on first use."""
    if samples_per_shard < 1:
        raise ValueError(f"samples_per_shard must be >= 1, got {samples_per_shard}")
    args = {
        "kind": "caption_video",
        "format_version": FORMAT_VERSION,
        "num_train_videos": num_train_videos,
        "num_heldout_videos": num_heldout_videos,
        "num_frames": num_frames,
        "height": height,
        "width": width,
        "fps": fps,
        "seed": seed,
        "samples_per_shard": samples_per_shard,
        "crf": DEMO_CRF,
    }
    seeds = caption_demo_seeds(seed, num_train_videos, num_heldout_videos)

    def write(folder: Path) -> dict[str, Any]:
        for split in ("train", "heldout"):
            with ShardSetWriter(
                folder / split, prefix=split, maxcount=samples_per_shard, creation_args=args
            ) as writer:
                for i, scene_seed in enumerate(seeds[split]):
                    writer.write(_sample(f"{split}_{i:05d}", scene_seed, args, split))
        return {"seeds": seeds}

    return ensure_generated(root, args, write)


def main(argv: list[str] | None = None) -> int:
    parser = demo_parser(__doc__, ensure_caption_demo_shards, (*COMMON_INTS, "height", "width"))
    print(describe_shards("caption demo dataset", ensure_caption_demo_shards(**vars(parser.parse_args(argv)))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
