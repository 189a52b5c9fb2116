"""make_shards: folder of videos + `<videos>_dwpose` -> shards; missing / mismatched poses are reported."""

from __future__ import annotations

import json

import numpy as np
import pytest
from webdataset.tariterators import tarfile_samples

from src.data.make_shards import default_pose_dir, key_from_relative_path, main, make_shards
from src.data.shards import list_shards
from src.data.video_io import write_mp4


def tiny(num_frames: int, value: int) -> np.ndarray:
    frames = np.full((num_frames, 32, 32, 3), value, np.uint8)
    frames[:, :, :8] = 255
    return frames


@pytest.fixture()
def video_tree(tmp_path):
    """videos/: a.mp4, b.mp4, sub/c.v2.mp4, missing.mp4, mismatch.mp4, short.mp4; poses in videos_dwpose/."""
    videos, poses = tmp_path / "videos", tmp_path / "videos_dwpose"
    lengths = {
        "a.mp4": 12,
        "b.mp4": 10,
        "sub/c.v2.mp4": 9,
        "missing.mp4": 8,
        "mismatch.mp4": 12,
        "short.mp4": 3,
    }
    for i, (name, frames) in enumerate(lengths.items()):
        write_mp4(videos / name, tiny(frames, 20 * i), fps=8)
        if name == "missing.mp4":
            continue
        pose_frames = frames - 2 if name == "mismatch.mp4" else frames
        write_mp4(poses / name, tiny(pose_frames, 100), fps=8)
    (videos / "notes.txt").write_text("not a video")
    return videos


def test_manifest_reports_missing_and_mismatched_pose_videos(video_tree, tmp_path) -> None:
    out = tmp_path / "shards"
    manifest = make_shards(video_tree, out, maxcount=2, min_frames=4, workers=2, log=lambda _: None)
    skipped = {item["source"]: item["reason"] for item in manifest["skipped"]}
    assert set(skipped) == {"missing.mp4", "mismatch.mp4", "short.mp4"}
    assert skipped["missing.mp4"].startswith("missing_pose: ")
    assert "pose_length: video has 12, pose has 10" == skipped["mismatch.mp4"]
    assert skipped["short.mp4"].startswith("too_short: 3 frames")
    assert manifest["total_samples"] == 3
    assert [s["samples"] for s in manifest["shards"]] == [2, 1]
    assert json.loads((out / "manifest.json").read_text())["args"]["poses"] == str(
        default_pose_dir(video_tree)
    )

    samples = {s["__key__"]: s for s in tarfile_samples({"url": p} for p in list_shards(out))}
    assert set(samples) == {"a", "b", "sub__c_v2"}
    sample = samples["sub__c_v2"]
    assert sample["mp4"] == (video_tree / "sub" / "c.v2.mp4").read_bytes()  # copied, not re-encoded
    assert sample["pose.mp4"] == (tmp_path / "videos_dwpose" / "sub" / "c.v2.mp4").read_bytes()
    meta = json.loads(sample["json"])
    assert (meta["num_frames"], meta["height"], meta["width"], meta["source"]) == (9, 32, 32, "sub/c.v2.mp4")
    assert meta["fps"] == pytest.approx(8.0)


def test_cli_prints_progress_and_honours_prefix(video_tree, tmp_path, capsys) -> None:
    out = tmp_path / "cli"
    assert main(["--videos", str(video_tree), "--out", str(out), "--prefix", "ubc", "--workers", "1"]) == 0
    printed = capsys.readouterr().out
    assert "6/6 probed" in printed and "skipped missing.mp4" in printed
    assert [p.name for p in sorted(out.glob("*.tar"))] == ["ubc-000000.tar"]
    with pytest.raises(FileExistsError, match="--overwrite"):
        main(["--videos", str(video_tree), "--out", str(out), "--prefix", "ubc"])


def test_clear_errors_for_missing_folders(tmp_path) -> None:
    (tmp_path / "v").mkdir()
    with pytest.raises(FileNotFoundError, match="--poses"):
        make_shards(tmp_path / "v", tmp_path / "out", log=lambda _: None)
    (tmp_path / "v_dwpose").mkdir()
    with pytest.raises(FileNotFoundError, match="no .mp4 files"):
        make_shards(tmp_path / "v", tmp_path / "out", log=lambda _: None)


def test_keys_have_no_dots_or_slashes() -> None:
    assert key_from_relative_path("dance/take.2/clip 1.mp4") == "dance__take_2__clip_1"
