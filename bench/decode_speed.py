"""Frames/s decoded by `src.data.video_io.decode_mp4` before vs after keyframe seeking, on the same files, in one run.

Access patterns of the loaders: Animate Anyone stage 1 (a reference frame + a target frame, anywhere in the video)
and a 24-frame clip (stage 2 / DynamiCrafter, stride 1 or 4 from a random start). Files are H.264 as the shard
writers encode them (GOP 16). Rows: `before` = decode from frame 0 with FFmpeg's own thread count (the old
reader); `from 0, 1 thread`; `after` = seek to the keyframe before each wanted run, one thread (a loader worker).
Frames/s counts the frames a sample needs (2 for a pair, 24 for a clip), so it is the loader's rate.

    python bench/decode_speed.py [--videos 6] [--frames 240] [--size 256] [--samples 40] [--workers 8]

Runs on a CPU; prints a table and the speed-up of `after` over `before`.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import multiprocessing.pool
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import table  # noqa: E402
from src.data.video_io import decode_mp4, encode_mp4  # noqa: E402

MODES = {
    "before (from 0, FFmpeg threads)": dict(seek=False, threads=0),
    "seek, FFmpeg threads": dict(seek=True, threads=0),
    "from 0, 1 thread": dict(seek=False, threads=1),
    "after (seek, 1 thread)": dict(seek=True, threads=1),
}


def make_video(frames: int, size: int, rng: np.random.Generator) -> bytes:
    """A moving textured scene: every frame differs, as in real footage."""
    texture = rng.integers(0, 256, (size * 2, size * 2, 3), dtype=np.uint8)
    shifts = np.cumsum(rng.integers(-3, 4, (frames, 2)), axis=0) % size
    video = np.stack([texture[y : y + size, x : x + size] for y, x in shifts])
    return encode_mp4(video, fps=24, gop=16, preset="veryfast")


def patterns(frames: int, samples: int, rng: np.random.Generator) -> dict[str, list[list[int]]]:
    pairs = [rng.choice(frames, size=2, replace=False).tolist() for _ in range(samples)]
    clips = {}
    for stride in (1, 4):
        span = 23 * stride + 1
        starts = rng.integers(0, frames - span + 1, samples)
        clips[f"24-frame clip, stride {stride}"] = [list(range(s, s + span, stride)) for s in starts]
    return {"stage-1 pair (reference + target)": pairs, **clips}


def decode_all(job: tuple[list[bytes], list[list[int]], dict, int]) -> None:
    videos, samples, mode, offset = job
    for i, indices in enumerate(samples, start=offset):
        decode_mp4(videos[i % len(videos)], indices, **mode)


def frames_per_second(videos: list[bytes], samples: list[list[int]], mode: dict, pool: mp.pool.Pool | None) -> float:
    """Wanted frames per second, all `workers` processes together (like a DataLoader's workers)."""
    start = time.perf_counter()
    if pool is None:
        decode_all((videos, samples, mode, 0))
    else:
        n = pool._processes
        jobs = [(videos, samples[k::n], mode, k) for k in range(n)]
        pool.map(decode_all, jobs)
    return sum(len(s) for s in samples) / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--videos", type=int, default=6)
    parser.add_argument("--frames", type=int, default=240, help="frames per video (10 s at 24 fps)")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--samples", type=int, default=40, help="samples per access pattern")
    parser.add_argument("--workers", type=int, default=1, help="parallel decoding processes (loader workers)")
    args = parser.parse_args(argv)
    pool = mp.get_context("fork").Pool(args.workers) if args.workers > 1 else None
    rng = np.random.default_rng(0)
    videos = [make_video(args.frames, args.size, rng) for _ in range(args.videos)]
    rows = [["access pattern", *MODES, "after / before"]]
    results = {}
    for name, samples in patterns(args.frames, args.samples, rng).items():
        rates = {mode: frames_per_second(videos, samples, kwargs, pool) for mode, kwargs in MODES.items()}
        results[name] = rates
        before, after = rates[next(iter(MODES))], rates[list(MODES)[-1]]
        rows.append([name, *(f"{r:.1f}" for r in rates.values()), f"{after / before:.2f}x"])
    if pool is not None:
        pool.close()
    print(
        f"{args.videos} videos x {args.frames} frames at {args.size}x{args.size}, GOP 16, {args.workers} worker(s); "
        "frames/s of wanted frames"
    )
    print(table(rows))
    return results


if __name__ == "__main__":
    main()
