"""A stopped-and-resumed run trains exactly like an uninterrupted one (same per-step losses, same final weights), for
both LightningModules, through the runner (`src.trainers.runner.run`, in-process to keep it fast).

The stopped run is a 1-step run whose final weights are then deleted: the run directory is what a run killed
right after its step-1 checkpoint leaves (a `last.ckpt` and no final weights), so the rerun resumes from step 1.
Checkpoints carry no RNG state (the copy `callbacks.preemption.restore_rng` used to keep was rank 0's, restored on
every rank, and is gone): the draws are keyed on the global sample index, which the loader restores. Before the
keyed draws, a resumed run without that copy reseeded the global RNG and drew step 1's noise and timesteps again
at step 2 (test_train_animate_anyone.py kills a real process for the resume mechanics).
Batch 1 and 2 steps keep it at a few seconds of training per system.
"""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from safetensors.torch import load_file

from src.config import register_resolvers
from src.trainers.runner import run
from tests.conftest import ROOT
from tests.integration.test_dynamicrafter_demo import TINY as DC_TINY
from tests.integration.test_train_animate_anyone import TINY as AA_TINY

SYSTEMS = {"animate_anyone": (AA_TINY, "spatial"), "dynamicrafter": (DC_TINY, "finetune")}


def train(system: str, run_dir: Path, cache: Path, steps: int) -> dict[int, float]:
    overrides, stage = SYSTEMS[system]
    batch_key = "stages.spatial.data.batch_size" if system == "animate_anyone" else "data.batch_size"
    register_resolvers()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(
            "train",
            overrides=[
                *overrides,
                f"paths.cache={cache}",
                f"stage={stage}",
                "evaluation.heldout=false",
                "data.val.num_videos=0",
                "trainer.log_every_n_steps=1",
                "trainer.enable_progress_bar=false",
                f"stages.{stage}.trainer.max_steps={steps}",
                f"stages.{stage}.trainer.val_check_interval={steps}",
                "callbacks.checkpoint.every_n_train_steps=1",
                f"{batch_key}=1",
            ],
        )
    run(cfg, run_dir)
    rows = csv.DictReader((run_dir / stage / "csv" / "metrics.csv").open())
    return {int(r["step"]): float(r["train/loss"]) for r in rows if r.get("train/loss")}


@pytest.mark.parametrize("system", list(SYSTEMS))
def test_resumed_run_draws_and_trains_like_the_uninterrupted_one(system, tmp_path, demo_cache):
    stage = SYSTEMS[system][1]
    straight = train(system, tmp_path / "straight", demo_cache, 2)

    stopped = tmp_path / "stopped"
    first = train(system, stopped, demo_cache, 1)
    shutil.rmtree(stopped / stage / "final")  # as if killed right after the step-1 checkpoint
    resumed = {**first, **train(system, stopped, demo_cache, 2)}

    assert sorted(straight) == sorted(resumed) and len(straight) == 2
    steps = sorted(straight)
    torch.testing.assert_close(
        torch.tensor([resumed[s] for s in steps]), torch.tensor([straight[s] for s in steps]), rtol=1e-5, atol=1e-6
    )
    assert len(set(straight.values())) == 2  # real, changing losses
    weights = load_file(str(stopped / stage / "final" / "net.safetensors"))
    reference = load_file(str(tmp_path / "straight" / stage / "final" / "net.safetensors"))
    assert set(weights) == set(reference)
    for key, value in reference.items():
        torch.testing.assert_close(weights[key], value, rtol=1e-5, atol=1e-6, msg=key)
