"""Both Animate Anyone stages through the real entry point on tiny settings: files, summary, resume."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT, run_entry

TINY = [
    "experiment=animate_anyone_demo",
    "logger=csv",
    "data.demo.num_train_videos=6",
    "data.demo.num_heldout_videos=2",
    "data.demo.num_frames=12",
    "data.num_workers=0",
    "data.val.num_videos=1",
    "data.val.num_frames=4",
    "model.sampling.num_steps=2",
    "evaluation.num_videos=1",
    "evaluation.num_frames=4",
    "evaluation.long=null",
    "stages.spatial.data.batch_size=2",
    "stages.temporal.data.batch_size=1",
    "stages.temporal.data.num_frames=4",
]


def tiny_run(run_dir: Path, cache: Path, *extra: str, check: bool = True):
    return run_entry(
        "src.train", *TINY, f"paths.cache={cache}", f"hydra.run.dir={run_dir}", *extra, check=check
    )


def test_both_stages_write_checkpoints_weights_samples_and_summary(tmp_path, demo_cache):
    run_dir = tmp_path / "run"
    proc = tiny_run(
        run_dir,
        demo_cache,
        "stages.spatial.trainer.max_steps=3",
        "stages.spatial.trainer.val_check_interval=3",
        "stages.temporal.trainer.max_steps=2",
        "stages.temporal.trainer.val_check_interval=2",
        "callbacks.speed.every_n_steps=1",
        "callbacks.progress.every_n_steps=2",
    )
    # stdout is a pipe, not a TTY: plain progress lines every 2 steps and at the last, with measured speed
    lines = [line for line in proc.stdout.splitlines() if line.startswith("[spatial] step")]
    assert [line.split()[2] for line in lines] == ["2/3", "3/3"], proc.stdout[-2000:]
    assert all(" loss 0." in line and "samples/s -" not in line and "TFLOP/s -" not in line for line in lines)
    assert any(line.startswith("[temporal] step 2/2 loss") for line in proc.stdout.splitlines())
    assert "callbacks.speed: one training step = " in proc.stdout + proc.stderr
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["stages_run"] == ["spatial", "temporal"]
    assert summary["steps"] == {"spatial": 3, "temporal": 2}
    for stage in ("spatial", "temporal"):
        assert Path(summary["weights"][stage]).is_file()
        assert Path(summary["checkpoints"][stage]).is_file()
        assert summary["final_losses"][stage] > 0
    assert summary["samples"] and all(Path(p).is_file() for p in summary["samples"])
    scores = summary["metrics"]["heldout"]
    assert set(scores) == {"trained", "untrained", "repeat_reference"}
    assert {"ssim", "psnr", "iou"} <= set(scores["trained"])
    # evaluation.num_frames=4 at the demo's stride 2 from start_frame 2, reference frame 0
    assert summary["heldout"]["protocol"] == {"reference_frame": 0, "scored_frames": [2, 4, 6, 8]}
    header = (run_dir / "spatial" / "csv" / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"train/device/samples_per_sec", "train/device/flops_per_sec"} <= set(header)


def test_stage_selection_and_temporal_needs_spatial_weights(tmp_path, demo_cache):
    run_dir = tmp_path / "run"
    proc = tiny_run(run_dir, demo_cache, "stage=temporal", check=False)
    assert proc.returncode != 0
    assert "spatial/final/net.safetensors" in proc.stderr and "stage=spatial" in proc.stderr

    # held-out evaluation of a stage-1 model: the long-clip (context window) scores are skipped, saying why
    long = "evaluation.long={num_videos:1,num_frames:8,stride:1,start_frame:2}"
    tiny_run(run_dir, demo_cache, "stage=spatial", "stages.spatial.trainer.max_steps=2", long)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["stages_run"] == ["spatial"]
    assert "no motion modules" in summary["heldout"]["long"]["skipped"]
    assert set(summary["metrics"]["heldout"]) == {"trained", "untrained", "repeat_reference"}
    tiny_run(run_dir, demo_cache, "stage=temporal", "stages.temporal.trainer.max_steps=1", "evaluation.heldout=false")
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["stages_run"] == ["temporal"] and summary["steps"]["temporal"] == 1


def test_killed_run_resumes_from_last_checkpoint_at_its_step(tmp_path, demo_cache):
    run_dir = tmp_path / "run"
    # Warm the demo cache first so the timed run below only trains.
    tiny_run(tmp_path / "warm", demo_cache, "stage=spatial", "stages.spatial.trainer.max_steps=1", "evaluation.heldout=false")
    args = [
        sys.executable, "-m", "src.train", *TINY, f"paths.cache={demo_cache}", f"hydra.run.dir={run_dir}",
        "stage=spatial", "evaluation.heldout=false", "data.val.num_videos=0",
        "stages.spatial.trainer.max_steps=10000", "callbacks.checkpoint.every_n_train_steps=2",
    ]
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    last = run_dir / "spatial" / "checkpoints" / "last.ckpt"
    deadline = time.time() + 300
    while time.time() < deadline and not (last.is_file() and _ckpt_step(last) >= 4):
        time.sleep(0.5)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    step_at_kill = _ckpt_step(last)
    assert step_at_kill >= 4

    resumed_to = step_at_kill + 3
    tiny_run(
        run_dir, demo_cache, "stage=spatial", "evaluation.heldout=false", "data.val.num_videos=0",
        f"stages.spatial.trainer.max_steps={resumed_to}", "callbacks.checkpoint.every_n_train_steps=2",
    )
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["stages"]["spatial"]["resumed_from_step"] == step_at_kill
    assert summary["steps"]["spatial"] == resumed_to


def _ckpt_step(path: Path) -> int:
    import torch

    for _ in range(5):
        try:
            return int(torch.load(path, map_location="cpu", weights_only=False)["global_step"])
        except Exception:  # noqa: BLE001 - the file may be mid-write; try again
            time.sleep(0.2)
    return -1


@pytest.mark.parametrize("bad", ["stage=warmup", "global_batch_size=7"])
def test_bad_config_is_a_clear_error(tmp_path, demo_cache, bad):
    proc = tiny_run(tmp_path / "run", demo_cache, bad, "stages.spatial.trainer.max_steps=1", check=False)
    assert proc.returncode == 2
    key = bad.split("=")[0]
    assert f"{key}=" in proc.stderr and ("this experiment's stages" in proc.stderr or "a multiple of" in proc.stderr)


def test_ddp_over_two_cpu_processes_trains_both_stages(tmp_path, demo_cache):
    """2 ranks (gloo): per-rank data streams with exactly equal batch counts, so neither stage hangs."""
    run_dir = tmp_path / "run"
    tiny_run(
        run_dir, demo_cache, "trainer.devices=2", "+trainer.strategy=ddp", "global_batch_size=4",
        "stages.spatial.trainer.max_steps=3", "stages.temporal.trainer.max_steps=2", "trainer.val_check_interval=2",
    )
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["steps"] == {"spatial": 3, "temporal": 2}
    assert set(summary["metrics"]["heldout"]) == {"trained", "untrained", "repeat_reference"}


def test_runs_without_any_logger(tmp_path, demo_cache):
    """logger=none: no W&B/CSV, and the learning-rate monitor must not refuse to start."""
    run_dir = tmp_path / "run"
    args = [a if a != "logger=csv" else "logger=none" for a in TINY]
    run_entry(
        "src.train", *args, f"paths.cache={demo_cache}", f"hydra.run.dir={run_dir}",
        "stage=spatial", "stages.spatial.trainer.max_steps=2", "evaluation.heldout=false",
    )
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["steps"] == {"spatial": 2}
    assert not (run_dir / "spatial" / "csv").exists() and not (run_dir / "wandb").exists()


def test_ema_and_performance_switches_through_the_entry_point(tmp_path, demo_cache):
    """callbacks.ema and performance: reach the run (runner adds the scale callbacks); the EMA state is in
    last.ckpt and `python -m src.export --ema` writes its weights."""
    run_dir = tmp_path / "run"
    tiny_run(
        run_dir, demo_cache, "stage=spatial", "stages.spatial.trainer.max_steps=3", "evaluation.heldout=false",
        "data.val.num_videos=0", "callbacks.ema.enabled=true", "callbacks.ema.decay=0.5",
        "performance.sdpa_backend=math", "callbacks.checkpoint.every_n_train_steps=3",
        "callbacks.ema.final_weights=ema",
    )
    import torch
    from safetensors.torch import load_file

    ckpt = torch.load(run_dir / "spatial" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    (ema,) = [v for k, v in ckpt["callbacks"].items() if "EMACallback" in k]
    assert ema["num_updates"] == 3
    final = load_file(run_dir / "spatial" / "final" / "net.safetensors")  # final_weights=ema: the fp32 EMA
    shadow = {k.removeprefix("net."): v for k, v in ema["shadow"].items()}
    assert shadow and all(torch.equal(final[k], v) for k, v in shadow.items())
    run_entry("src.export", str(run_dir / "spatial" / "checkpoints" / "last.ckpt"), str(tmp_path / "ema"), "--ema")
    assert any((tmp_path / "ema").glob("*.safetensors"))


def test_cosine_learning_rate_decay_through_the_entry_point(tmp_path, demo_cache):
    """model.lr_decay=cosine: warm-up, then the logged rate falls every step towards min_lr_ratio x lr; the
    Pose Guider's group keeps its multiplier on top."""
    import csv

    run_dir = tmp_path / "run"
    tiny_run(
        run_dir, demo_cache, "stage=spatial", "stages.spatial.trainer.max_steps=6", "evaluation.heldout=false",
        "data.val.num_videos=0", "trainer.log_every_n_steps=1", "model.warmup_steps=2", "model.lr_decay=cosine",
        "model.min_lr_ratio=0.1", "model.optimizer.lr=1e-3",
    )
    rows = list(csv.DictReader((run_dir / "spatial" / "csv" / "metrics.csv").open()))
    rates = {int(r["step"]): float(r["lr-AdamW/pg1"]) for r in rows if r.get("lr-AdamW/pg1")}
    guider = {int(r["step"]): float(r["lr-AdamW/pg2"]) for r in rows if r.get("lr-AdamW/pg2")}
    assert sorted(rates) == list(range(6))
    assert [rates[0], rates[1], rates[2]] == pytest.approx([5e-4, 1e-3, 1e-3])
    decayed = [rates[s] for s in range(2, 6)]
    assert all(a > b for a, b in zip(decayed, decayed[1:]))
    assert 1e-4 < rates[5] < 2.5e-4  # 3/4 of the way down a cosine to 1e-4
    assert all(guider[s] == pytest.approx(10 * rates[s]) for s in rates)
