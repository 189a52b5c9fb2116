"""`python -m src.sample experiment=animate_anyone_demo sample.reference=IMG sample.driving_video=RAW.mp4`: the poses
of a raw video (and of the reference) extracted on the fly with the tiny DWPose stand-ins, retargeted, animated."""

from __future__ import annotations

import json

import numpy as np
from PIL import Image

from src.data.video_io import decode_mp4, probe_mp4, write_mp4
from tests.conftest import run_entry
from tests.unit.tiny_dwpose import dancer_video, write_tiny_dwpose


def test_sample_extracts_the_driving_video_poses_and_retargets_them(tmp_path):
    det, pose = write_tiny_dwpose(tmp_path / "dwpose")
    frames, _ = dancer_video(10)
    driving = write_mp4(tmp_path / "dance.mp4", frames, fps=10, crf=0)
    hero = np.zeros((48, 64, 3), np.uint8)
    hero[16:40, 24:36] = 255  # a smaller figure than the dancer: the skeleton is rescaled to it
    Image.fromarray(hero).save(tmp_path / "hero.png")
    out = tmp_path / "out"
    run_entry(
        "src.sample",
        "experiment=animate_anyone_demo",
        f"sample.reference={tmp_path / 'hero.png'}",
        f"sample.driving_video={driving}",
        f"sample.pose_extractor.det_model={det}",
        f"sample.pose_extractor.pose_model={pose}",
        "sample.pose_extractor.device=cpu",
        "sample.pose_extractor.threads=1",
        "sample.pose_extractor.detect_resolution=0",
        "sample.size=[16,16]",
        "sample.sampling.num_steps=2",
        f"sample.out={out}",
        timeout=300,
    )
    assert decode_mp4((out / "hero_dance.mp4").read_bytes()).shape == (10, 16, 16, 3)
    assert probe_mp4((out / "poses" / "dance.mp4").read_bytes()).num_frames == 10  # the extracted skeletons
    reference = np.load(out / "poses" / "hero_keypoints.npz")
    assert reference["detected"].all() and list(reference["size"]) == [48, 64]
    record = json.loads((out / "samples.json").read_text())
    assert record["settings"]["retarget"] == "rescale"
    assert record["videos"][0]["driving_video"] == str(driving)
    assert record["videos"][0]["pose_video"] == str(out / "poses" / "dance.mp4")
