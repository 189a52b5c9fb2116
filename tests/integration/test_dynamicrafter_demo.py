"""DynamiCrafter through the real entry point: the demo's proof, and a tiny run's files and summary."""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path

import pytest

from tests.conftest import run_entry

TINY = [
    "experiment=dynamicrafter_demo",
    "logger=csv",
    "data.demo.num_train_videos=4",
    "data.demo.num_heldout_videos=2",
    "data.demo.num_frames=16",
    "data.batch_size=2",
    "data.val.num_videos=1",
    "evaluation.num_videos=1",
]

def test_tiny_run_writes_weights_samples_and_heldout_scores(tmp_path, demo_cache):
    run_dir = tmp_path / "run"
    common = [*TINY, f"paths.cache={demo_cache}", f"hydra.run.dir={run_dir}", "model.sampling.num_steps=2"]
    run_entry(
        "src.train", *common, "stages.finetune.trainer.max_steps=2", "stages.finetune.trainer.val_check_interval=2",
        # the shared schedule reaches this module too: linear decay from lr to half of it over the 2 steps
        "trainer.log_every_n_steps=1", "model.warmup_steps=0", "model.lr_decay=linear", "model.min_lr_ratio=0.5",
        "model.optimizer.lr=1e-3",
    )
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["stages_run"] == ["finetune"] and summary["steps"] == {"finetune": 2}
    assert Path(summary["weights"]["finetune"]).is_file() and summary["final_losses"]["finetune"] > 0
    assert summary["samples"] and all(Path(p).is_file() for p in summary["samples"])
    scores = summary["metrics"]["heldout"]
    assert set(scores) == {"trained", "untrained", "repeat_condition"}
    assert {"ssim", "psnr"} <= set(scores["trained"])
    assert summary["heldout"]["captions"] and len(summary["heldout"]["videos"]) == 1
    rows = list(csv.DictReader((run_dir / "finetune" / "csv" / "metrics.csv").open()))
    rates = [float(r["lr-AdamW"]) for r in rows if r.get("lr-AdamW")]
    assert rates == pytest.approx([1e-3, 7.5e-4])


@pytest.mark.slow
def test_dynamicrafter_demo_learns_to_animate_heldout_images(tmp_path, demo_cache):
    run_dir = tmp_path / "demo"
    started = time.time()
    run_entry("src.train", "experiment=dynamicrafter_demo", f"paths.cache={demo_cache}", f"hydra.run.dir={run_dir}",
              timeout=1500)  # fmt: skip
    elapsed = time.time() - started
    summary = json.loads((run_dir / "summary.json").read_text())
    scores = summary["metrics"]["heldout"]
    trained, untrained = scores["trained"], scores["untrained"]
    print(json.dumps(scores, indent=1), f"wall time {elapsed:.0f} s")
    assert summary["stages_run"] == ["finetune"]
    # measured (300 steps): SSIM 0.53 vs 0.40, PSNR 20.0 vs 12.2 dB; repeat-the-condition-frame is still far
    # better (0.81, 31.6 dB): the tiny model places the scene but stays blurry after minutes of CPU training
    assert trained["ssim"] > untrained["ssim"] + 0.08
    assert trained["psnr"] > untrained["psnr"] + 4.0
    assert "repeat_condition" in scores
    assert elapsed < 15 * 60
    for path in summary["heldout"]["videos"]:
        assert Path(path).is_file()
