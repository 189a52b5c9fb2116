"""WebVid-style CSV + downloaded videos -> caption-video shards (resized, center-cropped, length-filtered).

Rows need `videoid` and `name` (the caption); `page_dir` is optional. A row's video is
`<videos>/<page_dir>/<videoid>.mp4` (the WebVid downloaders' layout) or `<videos>/<videoid>.mp4`. Each clip
is decoded with PyAV, optionally resampled to a lower `--fps` (frames at the nearest source time, never
upsampled) and cut to its first `--max-frames` frames, resized on the shorter side + center-cropped to
`--height` x `--width` and re-encoded (H.264). Missing files, undecodable videos, clips that are too short
(`--min-frames` after resampling, `--min-seconds` of source) and repeated ids are skipped; the manifest lists
them with reasons and counts them per reason. Sample format: notes in dc_format (`mp4` + `json` with videoid,
caption, num_frames, fps, height, width, source). Layout on disk: `t h w c` uint8.

Parallel and resumable: rows are cut into chunks of `--chunk-size`; each chunk is one task of a process
pool and becomes its own shards `<out>/<prefix>-c<chunk>-<n>.tar`, recorded as done in `<out>/.webvid/`
only once complete. A rerun with the same --out and settings redoes only unfinished chunks (their partial
shards are deleted first), and refuses to continue a folder written with other settings.

    python -m src.data.webvid --csv results_2M_val.csv --videos data/webvid/videos --out shards/webvid_val \\
        --height 320 --width 512 --min-frames 16 --workers 8
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import shutil
import sys
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np

from src import atomic_io
from src.data.make_shards import key_from_relative_path
from src.data.shards import (
    MANIFEST_NAME,
    ShardSetWriter,
    add_shard_output_arguments,
    shard_output_settings,
    skip_reason_counts,
)
from src.data.video_io import VideoDecodeError, decode_mp4, encode_mp4, probe_mp4

__all__ = [
    "ClipOptions",
    "REQUIRED_COLUMNS",
    "WebVidRow",
    "convert_video",
    "convert_webvid",
    "find_video",
    "main",
    "read_webvid_csv",
    "resample_indices",
    "resize_center_crop",
    "skip_reason_counts",
]

REQUIRED_COLUMNS = ("videoid", "name")
STATE_DIR = ".webvid"
_RESIZE_BATCH = 64  # frames resized at once (bounds the working memory)


@dataclass(frozen=True, slots=True)
class WebVidRow:
    """One CSV row: the id, the original caption (`name`) and the downloader's page folder ('' if none)."""

    videoid: str
    caption: str
    page_dir: str = ""


@dataclass(frozen=True)
class ClipOptions:
    """How each video becomes a clip (see the module docstring)."""

    height: int
    width: int
    min_frames: int = 16
    min_seconds: float = 0.0
    max_frames: int | None = None
    fps: float | None = None
    crf: int = 23
    preset: str = "medium"

    def __post_init__(self) -> None:
        if self.height < 2 or self.width < 2 or self.height % 2 or self.width % 2:
            raise ValueError(
                f"--height/--width must be even and >= 2 (H.264 yuv420p), got {self.height}x{self.width}"
            )
        if self.min_frames < 1 or self.min_seconds < 0:
            raise ValueError(
                f"--min-frames must be >= 1 and --min-seconds >= 0, got {self.min_frames}, {self.min_seconds}"
            )
        if self.max_frames is not None and self.max_frames < self.min_frames:
            raise ValueError(
                f"--max-frames {self.max_frames} is below --min-frames {self.min_frames}; raise it or drop it"
            )
        if self.fps is not None and self.fps <= 0:
            raise ValueError(f"--fps must be positive, got {self.fps}")


def read_webvid_csv(path: str | Path) -> list[WebVidRow]:
    """Rows of a WebVid-style CSV (`videoid`, `name`, optional `page_dir`; other columns ignored)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"CSV {path} does not exist; pass --csv with a WebVid-style results CSV")
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        columns = [c.strip() for c in (reader.fieldnames or [])]
        missing = [c for c in REQUIRED_COLUMNS if c not in columns]
        if missing:
            raise ValueError(
                f"CSV {path} lacks the required column(s) {missing} (it has {columns}); a WebVid CSV needs "
                f"'videoid' and 'name' (the caption), plus 'page_dir' when videos sit in page folders"
            )
        reader.fieldnames = columns
        return [
            WebVidRow(
                videoid=(record.get("videoid") or "").strip(),
                caption=record.get("name") or "",
                page_dir=(record.get("page_dir") or "").strip(),
            )
            for record in reader
        ]


def find_video(videos: Path, row: WebVidRow) -> Path | None:
    """`<videos>/<page_dir>/<videoid>.mp4` if it exists, else `<videos>/<videoid>.mp4`, else None."""
    candidates = [videos / row.page_dir / f"{row.videoid}.mp4"] if row.page_dir else []
    candidates.append(videos / f"{row.videoid}.mp4")
    return next((path for path in candidates if path.is_file()), None)


def resample_indices(num_frames: int, source_fps: float, target_fps: float | None) -> tuple[list[int], float]:
    """Source frame indices for `target_fps` (nearest source time) and the resulting fps; never upsamples."""
    if target_fps is None or target_fps >= source_fps:
        return list(range(num_frames)), source_fps
    step = source_fps / target_fps
    count = int(np.floor((num_frames - 1) / step + 1e-9)) + 1
    indices = [min(num_frames - 1, int(np.floor(k * step + 0.5))) for k in range(count)]
    return indices, float(target_fps)


def _center_box(height: int, width: int, target_h: int, target_w: int) -> tuple[int, int, int, int]:
    """(top, left, h, w) of the largest centred window with the target aspect."""
    if width * target_h > height * target_w:
        crop_h, crop_w = height, max(1, round(height * target_w / target_h))
    else:
        crop_h, crop_w = max(1, round(width * target_h / target_w)), width
    return (height - crop_h) // 2, (width - crop_w) // 2, crop_h, crop_w


def resize_center_crop(frames: np.ndarray, height: int, width: int) -> np.ndarray:
    """(T, H, W, 3) uint8 -> (T, height, width, 3) uint8: shorter-side resize + center crop (antialiased bilinear).

    Resizes the uint8 frames directly (torch's channels-last uint8 kernel): about 4x faster than going
    through float32 as src.data.transforms.crop_resize does, and within 1 grey level of it.
    """
    import torch  # imported here: reading the CSV and planning need no torch
    import torch.nn.functional as F

    top, left, crop_h, crop_w = _center_box(frames.shape[1], frames.shape[2], height, width)
    crop = frames[:, top : top + crop_h, left : left + crop_w]
    out = np.empty((frames.shape[0], height, width, 3), np.uint8)
    for start in range(0, frames.shape[0], _RESIZE_BATCH):
        part = torch.from_numpy(np.ascontiguousarray(crop[start : start + _RESIZE_BATCH])).permute(0, 3, 1, 2)
        if (crop_h, crop_w) != (height, width):
            part = F.interpolate(
                part.contiguous(memory_format=torch.channels_last),
                size=(height, width),
                mode="bilinear",
                antialias=True,
                align_corners=False,
            )
        out[start : start + part.shape[0]] = part.permute(0, 2, 3, 1).numpy()
    return out


def convert_video(path: Path, options: ClipOptions) -> tuple[bytes | None, dict[str, Any], str | None]:
    """(mp4 bytes, clip metadata, None) or (None, {}, "<reason kind>: <details>") for one video file."""
    try:
        data = path.read_bytes()
        info = probe_mp4(data)
    except (OSError, VideoDecodeError) as exc:
        return None, {}, f"{getattr(exc, 'reason', 'undecodable')}: {exc}"
    if info.fps <= 0:
        return None, {}, "undecodable: the video stream has no frame rate"
    seconds = info.num_frames / info.fps
    if seconds < options.min_seconds:
        return None, {}, f"too_short: {seconds:.2f} s < --min-seconds {options.min_seconds:g}"
    indices, fps = resample_indices(info.num_frames, info.fps, options.fps)
    if len(indices) < options.min_frames:
        at = f" at {fps:g} fps" if options.fps is not None else ""
        return None, {}, f"too_short: {len(indices)} frames{at} < --min-frames {options.min_frames}"
    if options.max_frames is not None:
        indices = indices[: options.max_frames]
    try:
        frames = decode_mp4(data, indices)
    except (VideoDecodeError, IndexError) as exc:
        return None, {}, f"undecodable: {exc}"
    clip = resize_center_crop(frames, options.height, options.width)
    mp4 = encode_mp4(clip, fps, crf=options.crf, preset=options.preset)
    meta = {
        "num_frames": int(clip.shape[0]),
        "fps": float(fps),
        "height": options.height,
        "width": options.width,
    }
    return mp4, meta, None


@dataclass(frozen=True)
class _ChunkTask:
    index: int
    rows: list[WebVidRow]
    videos: str
    out: str
    prefix: str
    maxcount: int
    maxsize: float
    options: ClipOptions


def _chunk_prefix(prefix: str, index: int) -> str:
    return f"{prefix}-c{index:06d}"


def _run_chunk(task: _ChunkTask) -> dict[str, Any]:
    """Write one chunk's shards into a scratch folder, move them into --out, then mark the chunk done."""
    out, videos = Path(task.out), Path(task.videos)
    state = out / STATE_DIR
    scratch = state / f"tmp-chunk-{task.index:06d}"
    prefix = _chunk_prefix(task.prefix, task.index)
    with ShardSetWriter(
        scratch, prefix=prefix, maxcount=task.maxcount, maxsize=task.maxsize, overwrite=True
    ) as writer:
        for row in task.rows:
            path = find_video(videos, row)
            if path is None:
                where = f"{row.page_dir}/{row.videoid}.mp4 or " if row.page_dir else ""
                writer.skip(row.videoid, f"missing: no {where}{row.videoid}.mp4 under {videos}")
                continue
            mp4, meta, reason = convert_video(path, task.options)
            if mp4 is None:
                writer.skip(row.videoid, reason or "undecodable: unknown")
                continue
            meta = {
                "videoid": row.videoid,
                "caption": row.caption,
                **meta,
                "source": path.relative_to(videos).as_posix(),
            }
            writer.write({"__key__": key_from_relative_path(row.videoid), "mp4": mp4, "json": meta})
    manifest = writer.close()
    for shard in manifest["shards"]:
        os.replace(scratch / shard["path"], out / shard["path"])
    record = {
        "chunk": task.index,
        "rows": len(task.rows),
        "shards": manifest["shards"],
        "skipped": manifest["skipped"],
    }
    marker = state / f"chunk-{task.index:06d}.json"
    atomic_io.write_json(marker, record, indent=1)
    shutil.rmtree(scratch, ignore_errors=True)
    return record


def _init_worker() -> None:
    import torch

    torch.set_num_threads(1)  # one process per core: no intra-op thread oversubscription


def _plan(rows: list[WebVidRow]) -> tuple[list[WebVidRow], list[dict[str, str]]]:
    """Drop rows without an id and repeated ids / keys (keeping the first); say why for each."""
    kept: list[WebVidRow] = []
    skipped: list[dict[str, str]] = []
    keys: dict[str, str] = {}
    for number, row in enumerate(rows, start=2):  # CSV line numbers (line 1 is the header)
        if not row.videoid:
            skipped.append({"source": f"line {number}", "reason": "bad_row: empty videoid"})
            continue
        key = key_from_relative_path(row.videoid)
        if key in keys:
            earlier = keys[key]
            why = "repeated videoid" if earlier == row.videoid else f"key {key!r} collides with {earlier!r}"
            skipped.append({"source": row.videoid, "reason": f"duplicate: {why} (the first row is kept)"})
            continue
        keys[key] = row.videoid
        kept.append(row)
    return kept, skipped


def _fingerprint(rows: list[WebVidRow]) -> str:
    digest = hashlib.sha256()
    for row in rows:
        digest.update(f"{row.videoid}\x1f{row.page_dir}\x1f{row.caption}\x1e".encode())
    return digest.hexdigest()


def _prepare_out(out: Path, prefix: str, settings: dict[str, Any], overwrite: bool) -> set[int]:
    """Create / validate --out for this run; return the chunks already done. Deletes unfinished chunks' shards."""
    state = out / STATE_DIR
    run_file = state / "run.json"
    ours = sorted(out.glob(f"{prefix}-*.tar")) if out.is_dir() else []
    if overwrite:
        for path in ours:
            path.unlink()
        shutil.rmtree(state, ignore_errors=True)
        (out / MANIFEST_NAME).unlink(missing_ok=True)
        ours = []
    if run_file.is_file():
        previous = json.loads(run_file.read_text())
        differs = {  # the CSV's location may change; its rows (csv_rows_sha256) may not
            k: (previous.get(k), v) for k, v in settings.items() if k != "csv" and previous.get(k) != v
        }
        if differs:
            shown = ", ".join(f"{k}: was {old!r}, now {new!r}" for k, (old, new) in differs.items())
            raise FileExistsError(
                f"{out} holds a conversion started with other settings ({shown}); rerun with the same "
                f"settings to resume, or pass --overwrite to start over, or choose another --out"
            )
    elif ours or (out / MANIFEST_NAME).exists():
        raise FileExistsError(
            f"{out} already holds shards or a manifest not written by src.data.webvid; choose another --out "
            f"or pass --overwrite to replace the '{prefix}-*.tar' shards"
        )
    state.mkdir(parents=True, exist_ok=True)
    atomic_io.write_json(run_file, settings, indent=1)
    done = {int(p.stem.split("-")[1]) for p in state.glob("chunk-*.json")}
    for path in ours:  # shards of chunks that did not finish (a stopped run) are stale
        chunk = path.name[len(prefix) + 2 :].split("-")[0]
        if not chunk.isdigit() or int(chunk) not in done:
            path.unlink()
    for scratch in state.glob("tmp-chunk-*"):
        shutil.rmtree(scratch, ignore_errors=True)
    return done


def _write_manifest(
    out: Path,
    prefix: str,
    plan_skipped: list[dict[str, str]],
    settings: dict[str, Any],
    chunks: int,
    rows: int,
) -> dict[str, Any]:
    state = out / STATE_DIR
    records = [json.loads((state / f"chunk-{i:06d}.json").read_text()) for i in range(chunks)]
    shards = [shard for record in records for shard in record["shards"]]
    skipped = plan_skipped + [item for record in records for item in record["skipped"]]
    manifest = {
        "prefix": prefix,
        "shards": shards,
        "total_samples": sum(s["samples"] for s in shards),
        "total_bytes": sum(s["bytes"] for s in shards),
        "skipped": skipped,
        "skip_counts": skip_reason_counts(skipped),
        "inputs": rows,
        "args": settings,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    atomic_io.write_json(out / MANIFEST_NAME, manifest, default=str)
    return manifest


def convert_webvid(
    csv_path: str | Path,
    videos: str | Path,
    out: str | Path,
    options: ClipOptions,
    *,
    chunk_size: int = 500,
    maxcount: int = 1000,
    maxsize: float = 1e9,
    prefix: str = "webvid",
    workers: int = 4,
    limit: int | None = None,
    overwrite: bool = False,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Convert (or resume converting) the CSV's videos into shards in `out`; returns the manifest."""
    videos, out = Path(videos), Path(out)
    if not videos.is_dir():
        raise FileNotFoundError(
            f"videos folder {videos} does not exist; pass --videos with the downloaded WebVid videos "
            f"(<videos>/<page_dir>/<videoid>.mp4 or <videos>/<videoid>.mp4)"
        )
    if chunk_size < 1 or maxcount < 1 or maxsize <= 0:
        raise ValueError(
            f"--chunk-size and --maxcount must be >= 1 and --maxsize > 0, got {chunk_size}, "
            f"{maxcount}, {maxsize}"
        )
    if "-" in prefix or "." in prefix or "/" in prefix or not prefix:
        raise ValueError(
            f"--prefix {prefix!r} must be non-empty without '-', '.' or '/' (shards are "
            f"<prefix>-c<chunk>-<n>.tar)"
        )
    all_rows = read_webvid_csv(csv_path)
    if limit is not None:
        all_rows = all_rows[:limit]
    rows, plan_skipped = _plan(all_rows)
    settings = {
        "csv": str(Path(csv_path).resolve()),
        "csv_rows_sha256": _fingerprint(all_rows),
        "videos": str(videos.resolve()),
        "prefix": prefix,
        "chunk_size": chunk_size,
        "maxcount": maxcount,
        "maxsize": maxsize,
        "limit": limit,
        **asdict(options),
    }
    done = _prepare_out(out, prefix, settings, overwrite)
    chunks = [rows[start : start + chunk_size] for start in range(0, len(rows), chunk_size)]
    todo = [i for i in range(len(chunks)) if i not in done]
    log(
        f"[webvid] {len(all_rows)} rows ({len(plan_skipped)} dropped as bad/duplicate) in {len(chunks)} "
        f"chunks of {chunk_size}; {len(chunks) - len(todo)} already done, {len(todo)} to convert -> {out}"
    )
    tasks = [
        _ChunkTask(i, chunks[i], str(videos), str(out), prefix, maxcount, maxsize, options) for i in todo
    ]
    started, rows_done, written, skipped = time.monotonic(), 0, 0, 0

    def report(record: dict[str, Any], finished: int) -> None:
        nonlocal rows_done, written, skipped
        rows_done += record["rows"]
        written += sum(s["samples"] for s in record["shards"])
        skipped += len(record["skipped"])
        rate = rows_done / max(time.monotonic() - started, 1e-6)
        log(
            f"[webvid] chunk {record['chunk']} done ({finished}/{len(tasks)}): {rows_done} rows this run, "
            f"{written} written, {skipped} skipped, {rate:.1f} videos/s"
        )

    if workers <= 1 or len(tasks) <= 1:
        for finished, task in enumerate(tasks, start=1):
            report(_run_chunk(task), finished)
    else:
        with ProcessPoolExecutor(
            max_workers=min(workers, len(tasks)), mp_context=get_context("spawn"), initializer=_init_worker
        ) as pool:
            pending = {pool.submit(_run_chunk, task) for task in tasks}
            finished = 0
            try:
                while pending:
                    completed, pending = wait(pending, return_when=FIRST_COMPLETED)
                    for future in completed:
                        finished += 1
                        report(future.result(), finished)
            except BaseException:
                pool.shutdown(wait=True, cancel_futures=True)  # finished chunks stay done for a rerun
                raise
    manifest = _write_manifest(out, prefix, plan_skipped, settings, len(chunks), len(all_rows))
    counts = ", ".join(f"{k} {v}" for k, v in manifest["skip_counts"].items()) or "none"
    log(
        f"[webvid] {manifest['total_samples']} samples in {len(manifest['shards'])} shards "
        f"({manifest['total_bytes'] / 1e6:.1f} MB) in {out}; skipped: {counts}; manifest: {out / MANIFEST_NAME}"
    )
    return manifest


class _HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Keep the docstring's layout and show each option's default."""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=_HelpFormatter)
    parser.add_argument("--csv", required=True, help="WebVid-style CSV (videoid, name[, page_dir, ...])")
    parser.add_argument("--videos", required=True, help="folder of downloaded videos")
    parser.add_argument("--out", required=True, help="output folder for the shards and manifest.json")
    parser.add_argument("--height", type=int, default=320, help="clip height after resize + center crop")
    parser.add_argument("--width", type=int, default=512, help="clip width after resize + center crop")
    parser.add_argument(
        "--min-frames", type=int, default=16, help="skip clips with fewer frames (after --fps)"
    )
    parser.add_argument("--min-seconds", type=float, default=0.0, help="skip videos shorter than this")
    parser.add_argument(
        "--max-frames", type=int, default=None, help="keep only the first N frames (after --fps)"
    )
    parser.add_argument("--fps", type=float, default=None, help="lower the frame rate to this (never raised)")
    parser.add_argument("--crf", type=int, default=23, help="x264 quality of the re-encoded clips")
    parser.add_argument("--preset", default="medium", help="x264 speed preset (e.g. veryfast, medium)")
    parser.add_argument("--workers", type=int, default=4, help="processes converting chunks in parallel")
    parser.add_argument("--chunk-size", type=int, default=500, help="rows per resumable unit of work")
    add_shard_output_arguments(
        parser,
        prefix="webvid",
        prefix_help="shards are <prefix>-c<chunk>-<n>.tar",
        overwrite_help="delete this prefix's shards and start over",
    )
    parser.add_argument("--limit", type=int, default=None, help="only the first N CSV rows (trial runs)")
    args = parser.parse_args(argv)
    options = ClipOptions(
        height=args.height,
        width=args.width,
        min_frames=args.min_frames,
        min_seconds=args.min_seconds,
        max_frames=args.max_frames,
        fps=args.fps,
        crf=args.crf,
        preset=args.preset,
    )
    convert_webvid(
        args.csv,
        args.videos,
        args.out,
        options,
        chunk_size=args.chunk_size,
        workers=args.workers,
        limit=args.limit,
        **shard_output_settings(args),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
