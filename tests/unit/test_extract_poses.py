"""`python -m src.data.extract_poses` end to end on tiny ONNX stand-ins exported here (tests/unit/tiny_dwpose.py):
pose videos + keypoints + manifest, bad videos skipped and counted, resume, SLURM array shards, missing files."""

from __future__ import annotations

import json

import numpy as np
import pytest

from src.data.dwpose import draw_pose_frames
from src.data.extract_poses import main
from src.data.video_io import decode_mp4, probe_mp4, write_mp4
from tests.unit.tiny_dwpose import dancer_video, expected_keypoints, write_tiny_dwpose


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return write_tiny_dwpose(tmp_path_factory.mktemp("dwpose"))


@pytest.fixture()
def videos(tmp_path):
    """a.mp4 (5 frames), sub/b.mp4 (4 frames): a dancer; empty.mp4: nobody; broken.mp4: not a video."""
    root = tmp_path / "videos"
    frames, _ = dancer_video(5)
    write_mp4(root / "a.mp4", frames, fps=10, crf=0)
    write_mp4(root / "sub" / "b.mp4", frames[:4], fps=10, crf=0)
    write_mp4(root / "empty.mp4", np.zeros((3, 48, 64, 3), np.uint8), fps=10)
    (root / "broken.mp4").write_bytes(b"not an mp4 at all")
    return root


def run(videos, models, *extra):
    det, pose = models
    argv = ["--videos", str(videos), "--det-model", str(det), "--pose-model", str(pose), "--device", "cpu",
            "--threads", "1", "--detect-resolution", "0", *extra]  # fmt: skip
    return main(argv)


def test_cli_writes_pose_videos_keypoints_manifest_and_resumes(videos, models, capsys):
    assert run(videos, models) == 0
    out = videos.with_name("videos_dwpose")
    keypoints = np.load(out / "a.npz")
    _, boxes = dancer_video(5)
    # the detector's box and the pose model's SimCC peaks mapped back into the frame, as RTMPose does
    for t, box in enumerate(boxes):
        np.testing.assert_allclose(keypoints["wholebody"][t, :, :2], expected_keypoints(box), atol=1e-4)
    assert keypoints["body"].shape == (5, 18, 3) and keypoints["hands"].shape == (5, 2, 21, 3)
    assert keypoints["face"].shape == (5, 68, 3) and keypoints["detected"].all()
    assert list(keypoints["size"]) == [48, 64] and float(keypoints["fps"]) == 10.0
    np.testing.assert_allclose(
        keypoints["body"][:, 1, :2], keypoints["wholebody"][:, [5, 6], :2].mean(axis=1)
    )
    np.testing.assert_array_equal(keypoints["body"][:, 2], keypoints["wholebody"][:, 6])  # right shoulder

    info = probe_mp4((out / "a.mp4").read_bytes())
    assert (info.num_frames, info.height, info.width, info.fps) == (5, 48, 64, 10.0)
    drawn = draw_pose_frames(dict(keypoints), ["body", "hands", "face"])
    decoded = decode_mp4((out / "a.mp4").read_bytes()).astype(int)
    assert drawn.any(axis=-1).mean() > 0.05  # a skeleton, not a black frame
    assert np.abs(decoded - drawn).mean() < 4.0  # the one drawing, through H.264
    assert (out / "sub" / "b.mp4").is_file() and np.load(out / "sub" / "b.npz")["body"].shape[0] == 4

    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["summary"] == {"videos": 4, "done": 2, "resumed": 0, "skipped": 2,
                                   "skipped_by_reason": {"no_person": 1, "undecodable": 1}}  # fmt: skip
    assert not (out / "empty.mp4").exists() and (out / "empty.failed.json").is_file()
    printed = capsys.readouterr().out
    assert "4/4 videos (2 done, 2 skipped, 0 resumed)" in printed
    assert "4/4 videos" in (out / "extract_poses.log").read_text()

    before = (out / "a.mp4").stat().st_mtime_ns
    assert run(videos, models) == 0  # resumed: nothing is redone, failures are remembered
    assert (out / "a.mp4").stat().st_mtime_ns == before
    summary = json.loads((out / "manifest.json").read_text())["summary"]
    assert summary == {"videos": 4, "done": 0, "resumed": 2, "skipped": 2,
                       "skipped_by_reason": {"no_person": 1, "undecodable": 1}}  # fmt: skip


def test_slurm_array_tasks_split_the_videos(videos, models, monkeypatch):
    out = videos.with_name("poses")
    for task in (3, 4):  # an array 3-4: task ids counted from SLURM_ARRAY_TASK_MIN
        monkeypatch.setenv("SLURM_ARRAY_TASK_ID", str(task))
        monkeypatch.setenv("SLURM_ARRAY_TASK_COUNT", "2")
        monkeypatch.setenv("SLURM_ARRAY_TASK_MIN", "3")
        run(videos, models, "--out", str(out), "--min-detected", "0.9")
    shards = [json.loads((out / f"manifest-shard{i:05d}-of-00002.json").read_text()) for i in (0, 1)]
    sources = [{v["source"].split("videos/")[1] for v in s["videos"]} for s in shards]
    assert sources[0] | sources[1] == {"a.mp4", "broken.mp4", "empty.mp4", "sub/b.mp4"}
    assert not sources[0] & sources[1]
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.npz")) == ["a.npz", "sub/b.npz"]
    assert (out / "extract_poses-shard00001-of-00002.log").is_file()


def test_missing_model_file_names_the_file_the_flag_and_where_it_is_published(videos, models, tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        run(videos, (tmp_path / "nowhere" / "yolox_l.onnx", models[1]))
    message = str(err.value)
    assert "--det-model" in message and "nowhere/yolox_l.onnx" in message and "yzd-v/DWPose" in message


def test_make_shards_extracts_poses_from_raw_videos(videos, models, tmp_path):
    from webdataset.tariterators import tarfile_samples

    from src.data.make_shards import main as make_shards_main
    from src.data.shards import list_shards

    det, pose = models
    out = tmp_path / "shards"
    assert make_shards_main(["--videos", str(videos), "--out", str(out), "--extract-poses", "--det-model", str(det),
                             "--pose-model", str(pose), "--device", "cpu", "--threads", "1",
                             "--detect-resolution", "0", "--parts", "body"]) == 0  # fmt: skip
    samples = {s["__key__"]: s for s in tarfile_samples({"url": p} for p in list_shards(out))}
    assert set(samples) == {"a", "sub__b"}  # the video without a person and the broken one are skipped
    pose_video = decode_mp4(samples["a"]["pose.mp4"])
    assert pose_video.shape == (5, 48, 64, 3)
    keypoints = dict(np.load(videos.with_name("videos_dwpose") / "a.npz"))
    assert np.abs(pose_video.astype(int) - draw_pose_frames(keypoints, ["body"])).mean() < 4.0  # body only
    skipped = {s["source"]: s["reason"] for s in json.loads((out / "manifest.json").read_text())["skipped"]}
    assert set(skipped) == {"broken.mp4", "empty.mp4"} and skipped["empty.mp4"].startswith("missing_pose")


def test_python_m_with_two_worker_processes_gives_the_same_keypoints(videos, models, tmp_path):
    from tests.conftest import run_entry

    det, pose = models
    run(videos, models, "--out", str(tmp_path / "one"))
    proc = run_entry("src.data.extract_poses", "--videos", str(videos), "--out", str(tmp_path / "two"),
                     "--det-model", str(det), "--pose-model", str(pose), "--device", "cpu",
                     "--detect-resolution", "0", "--workers", "2", timeout=300)  # fmt: skip
    assert "4/4 videos (2 done, 2 skipped, 0 resumed)" in proc.stdout
    for name in ("a.npz", "sub/b.npz"):
        one, two = np.load(tmp_path / "one" / name), np.load(tmp_path / "two" / name)
        np.testing.assert_array_equal(one["wholebody"], two["wholebody"])


def test_one_video_file_as_input(videos, models):
    assert run(videos / "sub" / "b.mp4", models) == 0
    out = videos / "sub_dwpose"  # <folder of the file>_dwpose
    assert sorted(p.name for p in out.iterdir()) == ["b.mp4", "b.npz", "extract_poses.log", "manifest.json"]
