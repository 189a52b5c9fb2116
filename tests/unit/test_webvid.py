"""webvid: CSV + video folder -> resized, center-cropped, length-filtered shards; skips with reasons; resume."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from webdataset.tariterators import tarfile_samples

from src.data.shards import list_shards, read_manifest
from src.data.transforms import CropBox, crop_resize
from src.data.video_io import decode_mp4, write_mp4
from src.data.webvid import (
    ClipOptions,
    convert_webvid,
    main,
    read_webvid_csv,
    resample_indices,
    resize_center_crop,
)

ROOT = Path(__file__).resolve().parents[2]
SMALL = ClipOptions(height=16, width=16, min_frames=8, crf=10, preset="ultrafast")


def quiet(_: str) -> None:
    pass


def banded(num_frames: int) -> np.ndarray:
    """32x64 frames: red outer bands (cols < 16 and >= 48), green centre; a center crop to a square sees only green."""
    frames = np.zeros((num_frames, 32, 64, 3), np.uint8)
    frames[:, :, :16, 0] = 255
    frames[:, :, 48:, 0] = 255
    frames[:, :, 16:48, 1] = 255
    frames[:, :8, 16:48, 2] = np.arange(num_frames, dtype=np.uint8)[:, None, None] * 10  # frame index tag
    return frames


@pytest.fixture()
def webvid(tmp_path):
    """CSV rows: 2 good (page-dir and flat layout), missing, short, corrupt, a repeated id, an empty id."""
    videos = tmp_path / "videos"
    write_mp4(videos / "0001" / "100.mp4", banded(20), fps=10, crf=10)
    write_mp4(videos / "200.mp4", banded(12), fps=10, crf=10)  # flat layout, though the CSV names a page_dir
    write_mp4(videos / "0001" / "400.mp4", banded(4), fps=10, crf=10)
    (videos / "0002").mkdir()
    (videos / "0002" / "500.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 this is not a video" * 10)
    rows = [
        ("100", "PT00H00M02S", "0001", "a dog runs on the beach"),
        ("200", "PT00H00M01S", "0009", "waves, at sunset"),
        ("300", "PT00H00M05S", "0001", "never downloaded"),
        ("400", "PT00H00M00S", "0001", "too short"),
        ("500", "PT00H00M03S", "0002", "corrupt download"),
        ("100", "PT00H00M02S", "0001", "a re-crawled caption"),
        ("", "PT00H00M02S", "0001", "no id"),
    ]
    table = tmp_path / "results.csv"
    with table.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["videoid", "contentUrl", "duration", "page_dir", "name"])
        for videoid, duration, page_dir, name in rows:
            writer.writerow([videoid, f"https://example.invalid/{videoid}.mp4", duration, page_dir, name])
    return table, videos


def read_samples(out: Path) -> dict[str, dict]:
    samples = list(tarfile_samples({"url": p} for p in list_shards(out)))
    keys = [s["__key__"] for s in samples]
    assert len(keys) == len(set(keys)), f"duplicate samples: {keys}"
    return {s["__key__"]: s for s in samples}


def test_shapes_fields_and_skip_reasons(webvid, tmp_path) -> None:
    table, videos = webvid
    out = tmp_path / "shards"
    manifest = convert_webvid(table, videos, out, SMALL, workers=1, log=quiet)
    assert manifest["skip_counts"] == {
        "bad_row": 1,
        "duplicate": 1,
        "missing": 1,
        "too_short": 1,
        "undecodable": 1,
    }
    reasons = {item["source"]: item["reason"] for item in manifest["skipped"]}
    assert "0001/300.mp4" in reasons["300"] and "300.mp4 under" in reasons["300"]
    assert reasons["400"] == "too_short: 4 frames < --min-frames 8"
    assert reasons["500"].startswith("undecodable:")
    assert reasons["100"].startswith("duplicate: repeated videoid")
    assert manifest["total_samples"] == 2 and manifest["inputs"] == 7
    assert read_manifest(out) == manifest

    samples = read_samples(out)
    assert set(samples) == {"100", "200"}
    meta = json.loads(samples["100"]["json"])
    assert meta == {
        "videoid": "100",
        "caption": "a dog runs on the beach",  # the first row's caption, not the re-crawled one
        "num_frames": 20,
        "fps": pytest.approx(10.0),
        "height": 16,
        "width": 16,
        "source": "0001/100.mp4",
    }
    assert json.loads(samples["200"]["json"])["source"] == "200.mp4"
    frames = decode_mp4(samples["100"]["mp4"])
    assert frames.shape == (20, 16, 16, 3)
    # center crop (not a squash): the red side bands are cut away, the green middle fills the frame
    assert frames[:, 5:, :, 0].mean() < 12 and frames[:, 5:, :, 1].mean() > 240
    assert decode_mp4(samples["200"]["mp4"]).shape == (12, 16, 16, 3)


def test_resize_center_crop_matches_crop_then_resize() -> None:
    rows, cols = np.mgrid[0:40, 0:100]
    plane = (cols + 2 * rows).astype(np.uint8)  # a linear ramp: any symmetric filter keeps its value
    frames = np.repeat(np.stack([plane, plane // 2, 255 - plane], axis=-1)[None], 3, axis=0)
    out = resize_center_crop(frames, 20, 20)
    assert out.shape == (3, 20, 20, 3) and out.dtype == np.uint8
    # 40x100 -> centred 40x40 window (cols 30..70) halved: output (i, j) samples source (2i + 0.5, 30 + 2j + 0.5)
    i, j = np.mgrid[0:20, 0:20]
    expected = (30 + 2 * j + 0.5) + 2 * (2 * i + 0.5)
    assert np.abs(out[:, 1:-1, 1:-1, 0] - expected[1:-1, 1:-1]).max() <= 1.0
    assert np.abs(out[:, 1:-1, 1:-1, 2] - (255 - expected[1:-1, 1:-1])).max() <= 1.0
    frames = np.random.default_rng(0).integers(0, 256, (3, 40, 100, 3), dtype=np.uint8)
    # the float32 path of the training transforms gives the same pixels (within rounding)
    reference = crop_resize(frames, CropBox(0, 26, 40, 48), (30, 36), kind="pixels")
    reference = reference.mul(255).round().byte().permute(0, 2, 3, 1).numpy()
    assert np.abs(resize_center_crop(frames, 30, 36).astype(int) - reference).max() <= 1
    same = resize_center_crop(frames[:, :, 30:70], 40, 40)
    assert np.array_equal(same, frames[:, :, 30:70])


def test_resample_indices_never_upsamples() -> None:
    assert resample_indices(10, 30.0, None) == (list(range(10)), 30.0)
    assert resample_indices(10, 24.0, 30.0) == (list(range(10)), 24.0)
    indices, fps = resample_indices(30, 30.0, 12.0)  # every 2.5 source frames, nearest
    assert fps == 12.0 and indices == [0, 3, 5, 8, 10, 13, 15, 18, 20, 23, 25, 28]


def test_fps_and_max_frames(webvid, tmp_path) -> None:
    table, videos = webvid
    options = ClipOptions(
        height=16, width=24, min_frames=8, max_frames=9, fps=5.0, crf=10, preset="ultrafast"
    )
    manifest = convert_webvid(table, videos, tmp_path / "out", options, workers=1, log=quiet)
    # at 5 fps: 100 has 10 frames (kept, cut to 9), 200 has 6 (< 8, now too short)
    assert manifest["total_samples"] == 1 and manifest["skip_counts"]["too_short"] == 2
    sample = read_samples(tmp_path / "out")["100"]
    meta = json.loads(sample["json"])
    assert (meta["num_frames"], meta["fps"], meta["height"], meta["width"]) == (9, 5.0, 16, 24)
    frames = decode_mp4(sample["mp4"])
    assert frames.shape == (9, 16, 24, 3)
    tags = frames[:, 1, 8:16, 2].astype(float).mean(axis=1) / 10  # source frame index tags, every 2nd frame
    assert np.allclose(tags, np.arange(0, 18, 2), atol=0.6)


def test_cli_parallel_then_resume_does_no_work(webvid, tmp_path) -> None:
    table, videos = webvid
    out = tmp_path / "par"
    argv = [
        "--csv",
        str(table),
        "--videos",
        str(videos),
        "--out",
        str(out),
        "--height",
        "16",
        "--width",
        "16",
    ]
    argv += ["--min-frames", "8", "--chunk-size", "2", "--workers", "2", "--preset", "ultrafast"]
    run = subprocess.run(
        [sys.executable, "-m", "src.data.webvid", *argv],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    assert "3 chunks of 2; 0 already done, 3 to convert" in run.stdout and "done (3/3)" in run.stdout
    first = read_manifest(out)
    assert first["total_samples"] == 2 and sum(first["skip_counts"].values()) == 5
    tars = {p.name: p.stat().st_mtime_ns for p in out.glob("*.tar")}
    assert sorted(tars) == sorted(s["path"] for s in first["shards"])  # only finished chunks' shards

    lines: list[str] = []
    same = ClipOptions(height=16, width=16, min_frames=8, preset="ultrafast")  # the CLI's settings
    again = convert_webvid(table, videos, out, same, workers=2, chunk_size=2, log=lines.append)
    assert "3 already done, 0 to convert" in lines[0]
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.tar")} == tars
    assert again["shards"] == first["shards"] and again["skipped"] == first["skipped"]
    assert set(read_samples(out)) == {"100", "200"}


def test_interrupted_chunk_is_redone_and_stale_shards_dropped(webvid, tmp_path) -> None:
    table, videos = webvid
    out = tmp_path / "resume"
    first = convert_webvid(table, videos, out, SMALL, chunk_size=1, workers=1, log=quiet)
    # simulate a run stopped inside chunk 0 (videoid 100): its marker is gone, a partial shard remains
    state = out / ".webvid"
    (state / "chunk-000000.json").unlink()
    shard = out / "webvid-c000000-000000.tar"
    shard.write_bytes(b"partial")
    (state / "tmp-chunk-000000").mkdir()
    (out / "webvid-c000000-000007.tar").write_bytes(b"stale")
    untouched = (out / "webvid-c000001-000000.tar").stat().st_mtime_ns
    lines: list[str] = []
    again = convert_webvid(table, videos, out, SMALL, chunk_size=1, workers=1, log=lines.append)
    assert "4 already done, 1 to convert" in lines[0]
    assert not (out / "webvid-c000000-000007.tar").exists() and not (state / "tmp-chunk-000000").exists()
    assert (out / "webvid-c000001-000000.tar").stat().st_mtime_ns == untouched
    assert again["total_samples"] == first["total_samples"] == 2
    assert sorted(p.name for p in out.glob("*.tar")) == sorted(s["path"] for s in again["shards"])
    assert decode_mp4(read_samples(out)["100"]["mp4"]).shape == (20, 16, 16, 3)


def test_other_settings_refused_unless_overwrite(webvid, tmp_path) -> None:
    table, videos = webvid
    out = tmp_path / "o"
    base = ["--csv", str(table), "--videos", str(videos), "--out", str(out), "--min-frames", "8"]
    base += ["--workers", "1", "--preset", "ultrafast", "--width", "16"]
    assert main([*base, "--height", "16"]) == 0
    with pytest.raises(FileExistsError, match="height: was 16, now 32"):
        main([*base, "--height", "32"])
    table.write_text(table.read_text().replace("waves, at sunset", "waves at dusk"))
    with pytest.raises(FileExistsError, match="csv_rows_sha256"):
        main([*base, "--height", "16"])
    assert main([*base, "--height", "32", "--overwrite"]) == 0
    assert {json.loads(s["json"])["height"] for s in read_samples(out).values()} == {32}
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "webvid-000000.tar").write_bytes(b"")
    with pytest.raises(FileExistsError, match="not written by src.data.webvid"):
        convert_webvid(table, videos, tmp_path / "foreign", SMALL, log=quiet)


def test_clear_errors(webvid, tmp_path) -> None:
    table, videos = webvid
    bad = tmp_path / "bad.csv"
    bad.write_text("id,caption,page_dir\n1,x,y\n")
    with pytest.raises(ValueError, match=r"\['videoid', 'name'\]"):
        read_webvid_csv(bad)
    with pytest.raises(FileNotFoundError, match="--videos"):
        convert_webvid(table, tmp_path / "nowhere", tmp_path / "o", SMALL, log=quiet)
    with pytest.raises(FileNotFoundError, match="--csv"):
        convert_webvid(tmp_path / "none.csv", videos, tmp_path / "o", SMALL, log=quiet)
    with pytest.raises(ValueError, match="even"):
        ClipOptions(height=15, width=16)
