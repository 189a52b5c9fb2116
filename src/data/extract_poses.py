"""DWPose pose videos + keypoints from raw videos: `<videos>/<rel>.mp4` -> `<out>/<rel>.mp4` (the skeletons, drawn
with the one OpenPose drawing, same frames, size and fps) and `<out>/<rel>.npz` (keypoints with scores, see
src.data.dwpose), the layout `python -m src.data.make_shards` reads.

    python -m src.data.extract_poses --videos data/ubc/train --det-model weights/DWPose/yolox_l.onnx \\
        --pose-model weights/DWPose/dw-ll_ucoco_384.onnx           # -> data/ubc/train_dwpose/

Resumable: a video whose pose video and keypoints exist is not redone, one that failed before is skipped again
(its `<rel>.failed.json` says why) unless --retry-failed. Bad videos (undecodable, no person in at least
--min-detected of the frames) are skipped and counted in the manifest, never a crash. SLURM array tasks split the
videos (task i of N takes every N-th video; --num-shards/--shard-index, by default SLURM_ARRAY_TASK_COUNT/
SLURM_ARRAY_TASK_ID), each writing its own manifest and log; --workers N runs N processes on one machine.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict
from datetime import timedelta
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from src import atomic_io
from src.data.dwpose import DWPose, DWPoseConfig, draw_pose_frames, keypoint_arrays, save_keypoints
from src.data.video_folders import default_pose_dir, find_videos
from src.data.video_io import VideoDecodeError, encode_mp4_chunks, iter_mp4_frames, probe_mp4

__all__ = ["add_extractor_args", "config_from_args", "extract_poses", "extract_video", "main"]

DEFAULT_DET_MODEL = "weights/DWPose/yolox_l.onnx"
DEFAULT_POSE_MODEL = "weights/DWPose/dw-ll_ucoco_384.onnx"
DRAW_CHUNK = 64  # pose frames drawn and encoded at a time (memory of 64 frames, not the whole video)


def failed_marker(pose_path: Path) -> Path:
    return pose_path.with_suffix(".failed.json")


def extract_video(
    estimator: DWPose, source: Path, pose_path: Path, min_detected: float = 0.5
) -> dict[str, Any]:
    """One video -> its pose mp4 + keypoint npz (both atomic); returns the manifest record (status done/skipped)."""
    started = time.monotonic()
    record: dict[str, Any] = {"source": str(source)}
    try:
        data = source.read_bytes()
        info = probe_mp4(data)
        frames, people = [], []
        for frame in iter_mp4_frames(data):
            person, count = estimator(frame)
            frames.append(person)
            people.append(count)
    except (OSError, VideoDecodeError) as exc:
        return {**record, "status": "skipped", "reason": f"{getattr(exc, 'reason', 'unreadable')}: {exc}"}
    detected = sum(p is not None for p in frames)
    record.update(frames=len(frames), frames_without_person=len(frames) - detected, max_people=max(people))
    if detected < min_detected * len(frames) or detected == 0:
        reason = "no_person" if detected == 0 else "few_detections"
        return {**record, "status": "skipped", "reason": f"{reason}: a person in {detected} of {len(frames)} frames "
                f"(--min-detected {min_detected})"}  # fmt: skip
    fps = info.fps if info.fps > 0 else 30.0
    arrays = keypoint_arrays(frames, people, (info.height, info.width), fps)
    parts = estimator.config.parts
    chunks = (draw_pose_frames(arrays, parts, s, s + DRAW_CHUNK) for s in range(0, len(frames), DRAW_CHUNK))
    odd = info.height % 2 or info.width % 2
    atomic_io.write_bytes(pose_path, encode_mp4_chunks(chunks, fps, pix_fmt="yuv444p" if odd else "yuv420p"))
    save_keypoints(pose_path.with_suffix(".npz"), arrays)  # written last: its presence marks the video done
    return {**record, "status": "done", "pose": str(pose_path), "keypoints": str(pose_path.with_suffix(".npz")),
            "seconds": round(time.monotonic() - started, 3)}  # fmt: skip


_WORKER: dict[str, Any] = {}


def _init_worker(config: DWPoseConfig) -> None:
    _WORKER["estimator"] = DWPose(config)


def _work(job: tuple[Path, Path, float]) -> dict[str, Any]:
    source, pose_path, min_detected = job
    return extract_video(_WORKER["estimator"], source, pose_path, min_detected)


def shard_from_env(env: dict[str, str] | None = None) -> tuple[int, int]:
    """(shard index, number of shards) of a SLURM array task (index counted from the array's first task); (0, 1)."""
    env = dict(os.environ) if env is None else env
    if "SLURM_ARRAY_TASK_ID" in env and "SLURM_ARRAY_TASK_COUNT" in env:
        first = int(env.get("SLURM_ARRAY_TASK_MIN", 0))
        return int(env["SLURM_ARRAY_TASK_ID"]) - first, int(env["SLURM_ARRAY_TASK_COUNT"])
    return 0, 1


def _inputs(videos: Path) -> tuple[Path, list[Path]]:
    """(root, relative paths) of a folder of mp4s or of one mp4 file."""
    if videos.is_file():
        return videos.parent, [Path(videos.name)]
    return videos, find_videos(videos)


def extract_poses(
    videos: str | Path,
    config: DWPoseConfig,
    out: str | Path | None = None,
    *,
    workers: int = 1,
    shard_index: int = 0,
    num_shards: int = 1,
    min_detected: float = 0.5,
    retry_failed: bool = False,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Extract this shard's videos (see module doc); writes and returns the manifest."""
    videos = Path(videos)
    if not videos.exists():
        raise FileNotFoundError(
            f"--videos {videos}: no such folder or file; pass a folder of .mp4 files or one .mp4"
        )
    if not 0 <= shard_index < num_shards:
        raise ValueError(f"--shard-index {shard_index} must be in [0, --num-shards {num_shards})")
    if not 0.0 <= min_detected <= 1.0:
        raise ValueError(f"--min-detected must be a fraction in [0, 1], got {min_detected}")
    root, relatives = _inputs(videos)
    out = Path(out) if out is not None else default_pose_dir(root)
    mine = relatives[shard_index::num_shards]
    suffix = "" if num_shards == 1 else f"-shard{shard_index:05d}-of-{num_shards:05d}"
    manifest_path = out / f"manifest{suffix}.json"
    manifest: dict[str, Any] = {
        "args": {
            "videos": str(videos),
            "out": str(out),
            "shard_index": shard_index,
            "num_shards": num_shards,
            "min_detected": min_detected,
            "model": asdict(config),
        },  # fmt: skip
        "videos": [],
    }
    counts: Counter[str] = Counter()
    log(
        f"[extract_poses] shard {shard_index}/{num_shards}: {len(mine)} of {len(relatives)} videos in {root} -> {out}"
    )
    jobs = []
    for relative in mine:
        pose_path = out / relative.with_suffix(".mp4")
        marker = failed_marker(pose_path)
        if pose_path.is_file() and pose_path.with_suffix(".npz").is_file():
            counts["resumed"] += 1
            manifest["videos"].append(
                {
                    "source": str(root / relative),
                    "status": "done",
                    "resumed": True,
                    "pose": str(pose_path),
                    "keypoints": str(pose_path.with_suffix(".npz")),
                }
            )
        elif marker.is_file() and not retry_failed:
            counts["skipped"] += 1
            manifest["videos"].append({**json.loads(marker.read_text()), "resumed": True})
        else:
            jobs.append((root / relative, pose_path, min_detected))
    started, frames = time.monotonic(), 0
    pose_paths = {str(source): pose_path for source, pose_path, _ in jobs}
    for done, record in enumerate(_run_jobs(jobs, config, workers), start=1):
        pose_path = pose_paths[record["source"]]
        if record["status"] == "skipped":
            counts["skipped"] += 1
            atomic_io.write_json(failed_marker(pose_path), record)
            log(f"[extract_poses] skipped {record['source']}: {record['reason']}")
        else:
            counts["done"] += 1
            failed_marker(pose_path).unlink(missing_ok=True)
        frames += record.get("frames", 0)
        manifest["videos"].append(record)
        elapsed = time.monotonic() - started
        eta = timedelta(seconds=round(elapsed / done * (len(jobs) - done)))
        log(f"[extract_poses] {done}/{len(jobs)} videos ({counts['done']} done, {counts['skipped']} skipped, "
            f"{counts['resumed']} resumed) {frames} frames at {frames / max(elapsed, 1e-9):.1f} frames/s, eta {eta}")  # fmt: skip
        _write_manifest(manifest_path, manifest, counts, len(mine))
    _write_manifest(manifest_path, manifest, counts, len(mine))
    reasons = Counter(v["reason"].split(":")[0] for v in manifest["videos"] if v["status"] == "skipped")
    log(f"[extract_poses] {counts['done'] + counts['resumed']} of {len(mine)} videos have poses "
        f"({counts['resumed']} from before); skipped: {dict(reasons) or 0}; manifest: {manifest_path}")  # fmt: skip
    return manifest


def _write_manifest(path: Path, manifest: dict[str, Any], counts: Counter[str], total: int) -> None:
    skipped = Counter(v["reason"].split(":")[0] for v in manifest["videos"] if v["status"] == "skipped")
    manifest["summary"] = {"videos": total, "done": counts["done"], "resumed": counts["resumed"],
                           "skipped": counts["skipped"], "skipped_by_reason": dict(skipped)}  # fmt: skip
    atomic_io.write_json(path, manifest)


def _run_jobs(
    jobs: list[tuple[Path, Path, float]], config: DWPoseConfig, workers: int
) -> Iterator[dict[str, Any]]:
    if not jobs:
        return
    if workers <= 1:
        estimator = DWPose(config)
        for source, pose_path, min_detected in jobs:
            yield extract_video(estimator, source, pose_path, min_detected)
        return
    if config.threads == 0:  # share the cores between the worker processes
        config = DWPoseConfig(**{**asdict(config), "threads": max(1, (os.cpu_count() or 1) // workers)})
    DWPose(config)  # fail here, once, on a missing or bad model file rather than in every worker
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn"), initializer=_init_worker,
                             initargs=(config,)) as pool:  # fmt: skip
        yield from pool.map(_work, jobs)


def add_extractor_args(parser: argparse.ArgumentParser) -> None:
    """The DWPose flags (shared by extract_poses and make_shards --extract-poses)."""
    group = parser.add_argument_group("DWPose (local ONNX files; nothing is downloaded)")
    group.add_argument(
        "--det-model", default=DEFAULT_DET_MODEL, help="YOLOX detector .onnx (DWPose: yolox_l.onnx)"
    )
    group.add_argument(
        "--pose-model", default=DEFAULT_POSE_MODEL, help="whole-body pose .onnx (dw-ll_ucoco_384.onnx)"
    )
    group.add_argument(
        "--device", default="auto", help="auto | cpu | cuda | cuda:N (onnxruntime-gpu for CUDA)"
    )
    group.add_argument(
        "--threads", type=int, default=0, help="onnxruntime threads per process (0 = its default)"
    )
    group.add_argument(
        "--detect-resolution", type=int, default=512, help="short side for detection (0 = as is)"
    )
    group.add_argument("--parts", default="body,hands,face", help="drawn parts: body[,hands][,face]")
    group.add_argument("--min-detected", type=float, default=0.5,
                       help="skip videos with a person in fewer than this fraction of frames")  # fmt: skip


def config_from_args(args: argparse.Namespace) -> DWPoseConfig:
    return DWPoseConfig(
        det_model=args.det_model,
        pose_model=args.pose_model,
        device=args.device,
        threads=args.threads,
        detect_resolution=args.detect_resolution,
        parts=[p.strip() for p in args.parts.split(",") if p.strip()],
    )


class _Tee:
    """Progress lines to the terminal and, plainly, to a log file."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.handle = open(path, "a", encoding="utf-8")  # noqa: SIM115 (closed in main)

    def __call__(self, line: str) -> None:
        print(line, flush=True)
        self.handle.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {line}\n")
        self.handle.flush()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--videos", required=True, help="folder of .mp4 videos (searched recursively) or one .mp4"
    )
    parser.add_argument("--out", default=None, help="output folder (default: <videos>_dwpose)")
    add_extractor_args(parser)
    parser.add_argument("--workers", type=int, default=1, help="processes on this machine")
    index, count = shard_from_env()
    parser.add_argument(
        "--num-shards", type=int, default=count, help="array tasks (default SLURM_ARRAY_TASK_COUNT)"
    )
    parser.add_argument(
        "--shard-index", type=int, default=index, help="this task (default SLURM_ARRAY_TASK_ID)"
    )
    parser.add_argument(
        "--retry-failed", action="store_true", help="redo videos that failed in an earlier run"
    )
    args = parser.parse_args(argv)
    config = config_from_args(args)
    root = Path(args.videos)
    out = Path(args.out) if args.out else default_pose_dir(root.parent if root.is_file() else root)
    suffix = "" if args.num_shards == 1 else f"-shard{args.shard_index:05d}-of-{args.num_shards:05d}"
    tee = _Tee(out / f"extract_poses{suffix}.log")
    try:
        extract_poses(root, config, out, workers=args.workers, shard_index=args.shard_index,
                      num_shards=args.num_shards, min_detected=args.min_detected,
                      retry_failed=args.retry_failed, log=tee)  # fmt: skip
    finally:
        tee.handle.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
