"""Model mode on the tiny Animate Anyone: generate held-out clips into the run dir, score them, resume
without generating again; plus shard sources (real videos read from webdataset shards by key)."""

from __future__ import annotations

import json
import tarfile

import numpy as np
import pytest
from hydra.utils import instantiate

from src.data.shards import ShardSetWriter
from src.data.video_io import decode_mp4, encode_mp4
from src.eval.runner import run_evaluation
from src.eval.video_sources import ShardSource
from src.models.weights_io import save_net_weights
from tests.unit.evaluate_helpers import compose_eval, one_thread

pytestmark = pytest.mark.usefixtures("one_thread")
__all__ = ["one_thread"]


def _write_pose_shards(folder, n=2, frames=6, size=32):
    rng = np.random.default_rng(0)
    videos = {}
    with ShardSetWriter(folder, maxcount=1) as writer:
        for i in range(n):
            video = rng.integers(0, 255, (frames, size, size, 3), dtype=np.uint8)
            pose = np.zeros_like(video)
            pose[:, 8:24, 10 + np.arange(frames) % 4] = 255
            key = f"held{i}"
            writer.write({"__key__": key, "mp4": encode_mp4(video, 8, pix_fmt="yuv444p", crf=0),
                          "pose.mp4": encode_mp4(pose, 8, pix_fmt="yuv444p", crf=0), "json": {"fps": 8}})
            videos[key] = video
    return videos


def _overrides(tmp_path, weights):
    return ["eval=animate_anyone_ubc", "eval.mode=model", "model=animate_anyone_tiny", "logger=none",
            f"eval.checkpoint={weights}", f"eval.test_set.shards={tmp_path / 'shards'}", "eval.test_set.size=[32,32]",
            "eval.clip.num_frames=4", "eval.clip.stride=1", "eval.generator.num_steps=2", "eval.metrics.fvd=null",
            "eval.metrics.lpips=null", "eval.batch_size=2", "eval.progress=false", "eval.device=cpu"]


def test_model_mode_generates_scores_and_resumes(tmp_path):
    _write_pose_shards(tmp_path / "shards")
    cfg = compose_eval(_overrides(tmp_path, tmp_path / "net.safetensors"))
    module = instantiate(cfg.model, stage="temporal", init_weights=None)
    save_net_weights(module.net, tmp_path / "net.safetensors")
    run_dir = tmp_path / "run"
    results = run_evaluation(cfg, run_dir)
    generated = sorted(p.name for p in (run_dir / "generated").glob("*.mp4"))
    assert generated == ["held0.mp4", "held1.mp4"]
    assert sorted(p.name for p in (run_dir / "real").glob("*.mp4")) == generated
    video = decode_mp4((run_dir / "generated" / "held0.mp4").read_bytes())
    assert video.shape == (4, 32, 32, 3)
    assert results["counts"]["paired"] == 2 and results["mode"] == "model"
    assert 0 < results["metrics"]["psnr"] < 100 and -1 <= results["metrics"]["ssim"] <= 1
    stamp = {p.name: p.stat().st_mtime_ns for p in (run_dir / "generated").glob("*.mp4")}

    # second run: nothing is generated (a missing checkpoint would fail if the model were built), same scores
    again = run_evaluation(compose_eval(_overrides(tmp_path, tmp_path / "absent.safetensors")), run_dir)
    assert {p.name: p.stat().st_mtime_ns for p in (run_dir / "generated").glob("*.mp4")} == stamp
    assert again["metrics"] == pytest.approx(results["metrics"])

    # a deleted output is regenerated identically (per-name seeds), not shifted by batch position
    (run_dir / "generated" / "held1.mp4").unlink()
    old = json.loads((run_dir / "metrics.json").read_text())["metrics"]
    third = run_evaluation(cfg, run_dir)
    assert third["metrics"] == pytest.approx(old, rel=1e-6)


def test_missing_checkpoint_names_the_config_key(tmp_path):
    _write_pose_shards(tmp_path / "shards", n=1)
    with pytest.raises(FileNotFoundError, match=r"absent\.safetensors.*eval\.checkpoint"):
        run_evaluation(compose_eval(_overrides(tmp_path, tmp_path / "absent.safetensors")), tmp_path / "run")


def test_shard_source_reads_videos_by_key(tmp_path):
    videos = _write_pose_shards(tmp_path / "shards", n=3)
    source = ShardSource(str(tmp_path / "shards"))
    assert source.keys() == ["held0", "held1", "held2"]
    shard = sorted((tmp_path / "shards").glob("*.tar"))[2]
    with tarfile.open(shard) as archive:
        expected = archive.extractfile("held2.mp4").read()
    assert source.read("held2") == expected  # the mp4 entry, not pose.mp4
    assert np.abs(decode_mp4(source.read("held2")).astype(int) - videos["held2"]).mean() < 3
