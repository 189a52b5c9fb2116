"""`python -m src.sample experiment=animate_anyone_demo sample.reference=IMG sample.pose_video=POSE.mp4`: a pose
video longer than the motion window animated in context windows (its skeleton retargeted to the reference's from
the keypoint files), written as videos/<pose>.mp4 + side_by_side/<pose>.mp4 + samples.json."""

from __future__ import annotations

import json

import numpy as np
from PIL import Image

from src.data.video_io import decode_mp4, write_mp4
from tests.conftest import run_entry


def test_sample_animates_a_pose_video_longer_than_the_window(tmp_path):
    rng = np.random.default_rng(0)
    reference = tmp_path / "hero.png"
    Image.fromarray((rng.random((20, 24, 3)) * 255).astype(np.uint8)).save(reference)
    pose = np.zeros((22, 24, 24, 3), dtype=np.uint8)
    for f in range(22):
        pose[f, 4:20, 2 + f // 2 : 5 + f // 2] = (255, 0, 0)  # a limb sliding right
    pose_path = write_mp4(tmp_path / "dance.mp4", pose, fps=10)
    # keypoints of both sides: the driving skeleton (22 frames, twice the size) is retargeted by default
    from tests.unit.test_pose_retarget import REFERENCE

    np.savez(tmp_path / "dance.npz", body=np.repeat(REFERENCE[None] / 5, 22, axis=0), size=np.array([24, 24]))
    np.savez(tmp_path / "hero_keypoints.npz", body=REFERENCE / 10, size=np.array([20, 24]))
    out = tmp_path / "out"
    run_entry(
        "src.sample",
        "experiment=animate_anyone_demo",
        f"sample.reference={reference}",
        f"sample.pose_video={pose_path}",
        "sample.pose_stride=2",
        f"sample.reference_keypoints={tmp_path / 'hero_keypoints.npz'}",
        "sample.size=[16,16]",
        "sample.sampling.num_steps=2",
        "sample.sampling.context_overlap=3",
        f"sample.out={out}",
        timeout=300,
    )
    # named as the pose video (sample.name=pose)
    video = decode_mp4((out / "videos" / "dance.mp4").read_bytes())
    both = decode_mp4((out / "side_by_side" / "dance.mp4").read_bytes())
    assert video.shape == (11, 16, 16, 3)  # 22 pose frames at stride 2
    assert both.shape == (11, 16, 32, 3)
    record = json.loads((out / "samples.json").read_text())
    settings, written = record["settings"], record["videos"][0]
    assert settings["stage"] == "temporal" and written["fps"] == 5.0 and written["retarget"] == "rescale"
    assert written["video"] == str(out / "videos" / "dance.mp4") and record["skipped"] == []
    assert settings["sampling"]["context_frames"] == 8 and settings["sampling"]["context_overlap"] == 3
    assert settings["sampling"]["num_steps"] == 2
    assert record["videos"][0]["windows"] == [list(range(0, 8)), list(range(3, 11))]
