"""The embedded Animate Anyone demo dataset: procedurally rendered characters packed as shards.

`ensure_demo_shards` renders the videos once (deterministic in its arguments), writes train and
held-out shard sets under `<root>/demo-<hash of the arguments>/`, and reuses them on later calls.
Held-out videos use character seeds AND motion seeds that never occur in training, and carry
`mask.npz` (silhouette + background) for evaluation. Videos are stored `t h w c` uint8 as
yuv444p H.264 at a low CRF so the thin skeleton colours survive.

    python -m src.data.demo_dataset --root data/demo
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from src.data.demo_cache import COMMON_INTS, DemoShards, demo_parser, describe_shards, ensure_generated
from src.data.demo_characters import BACKGROUND_KINDS, render_demo_video
from src.data.shards import ShardSetWriter, encode_npz
from src.data.video_io import encode_mp4

__all__ = ["DemoShards", "demo_seeds", "ensure_demo_shards", "main"]

FORMAT_VERSION = 2  # 2: encoded reproducibly (video_io.encode_mp4 deterministic=True)
DEMO_CRF = 4
_SEED_BLOCK = 100_000  # each dataset seed owns [seed * block, (seed + 1) * block): train half, held-out half


def demo_seeds(seed: int, num_train: int, num_heldout: int) -> dict[str, list[int]]:
    """Character and motion seeds; held-out ones are disjoint from training ones by construction."""
    half = _SEED_BLOCK // 2
    if seed < 0 or num_train > half or num_heldout > half:
        raise ValueError(
            f"need seed >= 0 and at most {half} videos per split, got {seed}, {num_train}, {num_heldout}"
        )
    base = seed * _SEED_BLOCK
    motion_base = base + 10**9  # motions live in another range than characters
    return {
        "train_characters": [base + i for i in range(num_train)],
        "train_motions": [motion_base + i for i in range(num_train)],
        "heldout_characters": [base + half + i for i in range(num_heldout)],
        "heldout_motions": [motion_base + half + i for i in range(num_heldout)],
    }


def _demo_sample(key: str, character: int, motion: int, args: dict[str, Any], split: str) -> dict[str, Any]:
    video = render_demo_video(
        character, motion, args["num_frames"], size=args["size"], fps=args["fps"],
        backgrounds=tuple(args["backgrounds"]),
    )
    encode = {"fps": args["fps"], "pix_fmt": "yuv444p", "crf": DEMO_CRF}
    meta = {
        **video.meta,
        "character_seed": character,
        "motion_seed": motion,
        "num_frames": int(video.frames.shape[0]),
        "fps": args["fps"],
        "height": int(video.frames.shape[1]),
        "width": int(video.frames.shape[2]),
        "source": "demo",
        "split": split,
    }
    sample = {
        "__key__": key,
        "mp4": encode_mp4(video.frames, **encode),
        "pose.mp4": encode_mp4(video.pose, **encode),
        "json": meta,
    }
    if split == "heldout":
        sample["mask.npz"] = encode_npz(silhouette=video.silhouette.astype(bool), background=video.background)
    return sample


def _write_split(
    out: Path, split: str, characters: list[int], motions: list[int], args: dict[str, Any]
) -> None:
    with ShardSetWriter(
        out / split, prefix=split, maxcount=args["samples_per_shard"], creation_args=args
    ) as writer:
        for i, (character, motion) in enumerate(zip(characters, motions)):
            writer.write(_demo_sample(f"{split}_{i:05d}", character, motion, args, split))


def ensure_demo_shards(
    root: str | Path,
    *,
    num_train_videos: int = 96,
    num_heldout_videos: int = 8,
    num_frames: int = 24,
    size: int = 64,
    fps: int = 8,
    seed: int = 0,
    samples_per_shard: int = 32,
    backgrounds: Sequence[str] = BACKGROUND_KINDS[:4],
) -> DemoShards:
    """Return the demo shards for these arguments, generating them atomically on first use."""
    if num_train_videos < 1 or num_heldout_videos < 1 or samples_per_shard < 1:
        raise ValueError("num_train_videos, num_heldout_videos and samples_per_shard must all be >= 1")
    args = {
        "format_version": FORMAT_VERSION,
        "num_train_videos": num_train_videos,
        "num_heldout_videos": num_heldout_videos,
        "num_frames": num_frames,
        "size": size,
        "fps": fps,
        "seed": seed,
        "samples_per_shard": samples_per_shard,
        "crf": DEMO_CRF,
        "backgrounds": list(backgrounds),
    }
    seeds = demo_seeds(seed, num_train_videos, num_heldout_videos)

    def write(folder: Path) -> dict[str, Any]:
        _write_split(folder, "train", seeds["train_characters"], seeds["train_motions"], args)
        _write_split(folder, "heldout", seeds["heldout_characters"], seeds["heldout_motions"], args)
        return {"seeds": seeds}

    return ensure_generated(root, args, write)


def main(argv: list[str] | None = None) -> int:
    parser = demo_parser(__doc__, ensure_demo_shards, (*COMMON_INTS, "size"))
    parser.add_argument("--backgrounds", nargs="+", default=list(BACKGROUND_KINDS[:4]), choices=BACKGROUND_KINDS)
    shards = ensure_demo_shards(**vars(parser.parse_args(argv)))
    print(describe_shards("demo dataset", shards, list_paths=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
