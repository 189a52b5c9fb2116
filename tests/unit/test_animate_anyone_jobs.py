"""Animate Anyone output names: by pose video (the real clip's key) or reference_pose, and a reference folder
giving each pose video its own image."""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from src.inference.animate_anyone_jobs import Job, output_paths, plan_jobs


def test_names_and_per_pose_references(tmp_path):
    poses = [tmp_path / "p" / "clip_a.mp4", tmp_path / "p" / "clip_b.mp4"]
    (tmp_path / "refs").mkdir()
    (tmp_path / "refs" / "clip_a.jpg").write_bytes(b"")
    by_pose = plan_jobs(OmegaConf.create({"reference": str(tmp_path / "refs"), "name": "pose"}), poses)
    assert by_pose == [
        Job("clip_a", tmp_path / "refs" / "clip_a.jpg", poses[0]),
        Job("clip_b", None, poses[1]),
    ]
    one = plan_jobs(OmegaConf.create({"reference": "hero.png", "name": "reference_pose"}), poses)
    assert [j.name for j in one] == ["hero_clip_a", "hero_clip_b"] and one[0].reference == Path("hero.png")
    assert output_paths(tmp_path, "clip_a") == (
        tmp_path / "videos" / "clip_a.mp4",
        tmp_path / "side_by_side" / "clip_a.mp4",
    )
    with pytest.raises(ValueError, match="sample.name='stem'"):
        plan_jobs(OmegaConf.create({"reference": "hero.png", "name": "stem"}), poses)
