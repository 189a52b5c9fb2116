"""Pack a folder of videos plus their pose videos into webdataset shards (no re-encoding).

Layout expected (what DWPose extraction tools write): `<videos>/<rel>.mp4` and the skeleton video
at the same relative path under `<videos>_dwpose/` (or --poses). Each sample gets a dot-free key
from the relative path, the original `mp4` bytes, the `pose.mp4` bytes and a `json` with
num_frames, fps, height, width and source. Missing or mismatched pose videos and unreadable or too
short videos are skipped and listed, with reasons, in the manifest.

    python -m src.data.make_shards --videos data/ubc/train --out shards/ubc_train --maxcount 500

With --extract-poses, the pose folder is first filled by DWPose (src.data.extract_poses, same flags: --det-model,
--pose-model, ...): raw dance videos go straight to shards. Videos already extracted there are not redone.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from src.data.shards import ShardSetWriter, add_shard_output_arguments, shard_output_settings
from src.data.video_folders import default_pose_dir, find_videos
from src.data.video_io import VideoDecodeError, probe_mp4

__all__ = ["default_pose_dir", "find_videos", "key_from_relative_path", "main", "make_shards"]

def key_from_relative_path(relative: str | Path) -> str:
    """Dot-free sample key: 'dance/a.b.mp4' -> 'dance__a_b' (slashes -> '__', other odd chars -> '_')."""
    parts = Path(relative).with_suffix("").parts
    return "__".join(re.sub(r"[^A-Za-z0-9_-]", "_", part) for part in parts)


@dataclass
class _Probed:
    relative: Path
    sample: dict[str, Any] | None = None
    reason: str | None = None


def _probe_pair(videos: Path, poses: Path, relative: Path, min_frames: int) -> _Probed:
    video_path, pose_path = videos / relative, poses / relative
    if not pose_path.is_file():
        return _Probed(relative, reason=f"missing_pose: no {pose_path}")
    try:
        video_bytes, pose_bytes = video_path.read_bytes(), pose_path.read_bytes()
        video, pose = probe_mp4(video_bytes), probe_mp4(pose_bytes)
    except (OSError, VideoDecodeError) as exc:
        return _Probed(relative, reason=f"{getattr(exc, 'reason', 'undecodable')}: {exc}")
    if video.num_frames != pose.num_frames:
        return _Probed(
            relative, reason=f"pose_length: video has {video.num_frames}, pose has {pose.num_frames}"
        )
    if (video.height, video.width) != (pose.height, pose.width):
        return _Probed(
            relative,
            reason=f"pose_resolution: video {video.height}x{video.width}, pose {pose.height}x{pose.width}",
        )
    if video.num_frames < min_frames:
        return _Probed(relative, reason=f"too_short: {video.num_frames} frames < --min-frames {min_frames}")
    meta = {
        "num_frames": video.num_frames,
        "fps": video.fps,
        "height": video.height,
        "width": video.width,
        "source": relative.as_posix(),
        "pose_source": f"{poses.name}/{relative.as_posix()}",
    }
    sample = {"__key__": key_from_relative_path(relative), "mp4": video_bytes, "pose.mp4": pose_bytes}
    sample["json"] = meta
    return _Probed(relative, sample=sample)


def _probe_all(
    videos: Path, poses: Path, relatives: list[Path], min_frames: int, workers: int
) -> Iterator[_Probed]:
    """Probe in a thread pool, in input order, with a bounded number of videos held in memory."""
    window = max(1, workers) * 4
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        pending: list[Future[_Probed]] = []
        for relative in relatives:
            pending.append(pool.submit(_probe_pair, videos, poses, relative, min_frames))
            if len(pending) >= window:
                yield pending.pop(0).result()
        for future in pending:
            yield future.result()


def make_shards(
    videos: str | Path,
    out: str | Path,
    *,
    poses: str | Path | None = None,
    maxcount: int = 1000,
    maxsize: float = 1e9,
    prefix: str = "shard",
    min_frames: int = 1,
    workers: int = 4,
    overwrite: bool = False,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Write the shards and manifest.json into `out`; returns the manifest."""
    videos = Path(videos)
    poses = Path(poses) if poses is not None else default_pose_dir(videos)
    if not poses.is_dir():
        raise FileNotFoundError(
            f"pose folder {poses} does not exist; extract DWPose videos there (same relative paths as "
            f"{videos}: add --extract-poses, or run python -m src.data.extract_poses) or pass --poses DIR"
        )
    relatives = find_videos(videos)
    if not relatives:
        raise FileNotFoundError(f"no .mp4 files under {videos}")
    creation_args = {
        "videos": str(videos),
        "poses": str(poses),
        "prefix": prefix,
        "min_frames": min_frames,
        "inputs": len(relatives),
    }
    log(f"[make_shards] {len(relatives)} videos in {videos}, poses in {poses} -> {out}")
    every = max(1, len(relatives) // 20)
    with ShardSetWriter(
        out,
        prefix=prefix,
        maxcount=maxcount,
        maxsize=maxsize,
        creation_args=creation_args,
        overwrite=overwrite,
    ) as writer:
        keys: dict[str, Path] = {}
        for done, probed in enumerate(_probe_all(videos, poses, relatives, min_frames, workers), start=1):
            source = probed.relative.as_posix()
            if probed.sample is None:
                writer.skip(source, probed.reason or "unknown")
            elif probed.sample["__key__"] in keys:
                key = probed.sample["__key__"]
                writer.skip(source, f"key_collision: {key!r} collides with {keys[key].as_posix()}; rename one of them")
            else:
                keys[probed.sample["__key__"]] = probed.relative
                writer.write(probed.sample)
            if done % every == 0 or done == len(relatives):
                log(
                    f"[make_shards] {done}/{len(relatives)} probed, {len(keys)} written, {len(writer.skipped)} skipped"
                )
    manifest = writer.close()
    for item in manifest["skipped"]:
        log(f"[make_shards] skipped {item['source']}: {item['reason']}")
    log(
        f"[make_shards] wrote {manifest['total_samples']} samples into {len(manifest['shards'])} shards "
        f"({manifest['total_bytes'] / 1e6:.1f} MB) in {out}; manifest: {Path(out) / 'manifest.json'}"
    )
    return manifest


def main(argv: list[str] | None = None) -> int:
    # imported here: extract_poses imports this module
    from src.data.extract_poses import add_extractor_args, config_from_args, extract_poses

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--videos", required=True, help="folder of .mp4 videos (searched recursively)")
    parser.add_argument("--poses", default=None, help="folder of pose videos (default: <videos>_dwpose)")
    parser.add_argument("--out", required=True, help="output folder for the .tar shards and manifest.json")
    add_shard_output_arguments(parser)
    parser.add_argument("--min-frames", type=int, default=1, help="skip videos with fewer frames")
    parser.add_argument("--workers", type=int, default=4, help="threads probing videos")
    parser.add_argument(
        "--extract-poses", action="store_true", help="run DWPose first, writing the pose videos into --poses"
    )
    parser.add_argument("--extract-workers", type=int, default=1, help="DWPose processes (--extract-poses)")
    add_extractor_args(parser)
    args = parser.parse_args(argv)
    if args.extract_poses:
        extract_poses(
            args.videos,
            config_from_args(args),
            args.poses if args.poses is not None else default_pose_dir(args.videos),
            workers=args.extract_workers,
            min_detected=args.min_detected,
        )
    make_shards(
        args.videos,
        args.out,
        poses=args.poses,
        min_frames=args.min_frames,
        workers=args.workers,
        **shard_output_settings(args),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
