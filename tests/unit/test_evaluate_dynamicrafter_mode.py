"""Model mode on the tiny DynamiCrafter: each caption-video clip's first frame animated with its caption,
scored against the clip, and a resumed run generates nothing new."""

from __future__ import annotations

import numpy as np
import pytest
from hydra.utils import instantiate

from src.data.shards import ShardSetWriter
from src.data.video_io import decode_mp4, encode_mp4
from src.eval.runner import run_evaluation
from src.models.weights_io import save_net_weights
from tests.unit.evaluate_helpers import compose_eval, one_thread

pytestmark = pytest.mark.usefixtures("one_thread")
__all__ = ["one_thread"]


def _write_caption_shards(folder, n=2, frames=8, size=32):
    rng = np.random.default_rng(0)
    with ShardSetWriter(folder, maxcount=1) as writer:
        for i in range(n):
            video = rng.integers(0, 255, (frames, size, size, 3), dtype=np.uint8)
            writer.write({"__key__": f"clip{i}", "mp4": encode_mp4(video, 8, pix_fmt="yuv444p", crf=0),
                          "json": {"videoid": f"clip{i}", "caption": f"a shape moves {i}", "fps": 8,
                                   "num_frames": frames, "height": size, "width": size, "source": "test"}})


def _overrides(tmp_path, weights):
    return ["eval=dynamicrafter_ucf101", "eval.mode=model", "model=dynamicrafter_tiny", "logger=none",
            f"eval.checkpoint={weights}", f"eval.test_set.shards={tmp_path / 'shards'}", "eval.resolution=[32,32]",
            "eval.num_samples=2", "eval.clip.num_frames=8", "eval.clip.stride=1", "eval.generated_clip.num_frames=8",
            "+eval.generator.sampling={num_steps: 2}", "eval.metrics.fvd=null", "eval.metrics.kvd=null",
            "eval.metrics.pic=null", "+eval.metrics.psnr={_target_: src.eval.pixel_metrics.VideoPSNR, protocol: standard}",
            "eval.batch_size=2", "eval.progress=false", "eval.device=cpu"]


def test_dynamicrafter_model_mode_generates_scores_and_resumes(tmp_path):
    _write_caption_shards(tmp_path / "shards")
    cfg = compose_eval(_overrides(tmp_path, tmp_path / "net.safetensors"))
    module = instantiate(cfg.model, stage="finetune", init_weights=None)
    save_net_weights(module.net, tmp_path / "net.safetensors")
    run_dir = tmp_path / "run"
    results = run_evaluation(cfg, run_dir)
    generated = sorted(p.name for p in (run_dir / "generated").glob("*.mp4"))
    assert generated == ["clip0.mp4", "clip1.mp4"]
    assert decode_mp4((run_dir / "generated" / "clip0.mp4").read_bytes()).shape == (8, 32, 32, 3)
    assert results["counts"]["paired"] == 2 and 0 < results["metrics"]["psnr"] < 100
    again = run_evaluation(compose_eval(_overrides(tmp_path, tmp_path / "absent.safetensors")), run_dir)
    assert again["metrics"] == pytest.approx(results["metrics"])
