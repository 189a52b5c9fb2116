"""Skipped samples per reason, through `python -m src.train`: the counts logged (CSV), written to summary.json and
printed equal the planted defects, summed over DataLoader worker processes and over DDP ranks.

40 soak samples (tests/soak/corrupt_shards.py), one defect of each of the eight kinds, every fifth sample from the
first. Finite passes (`data.resampled=false`, batch 1) make the run consume every good sample exactly once, so the
totals are exact: 34 steps on one process; with 2 ranks x 2 workers each (rank, worker) slot reads every fourth
sample, the defects land on all four slots and each rank trains on 17 of the good samples.
"""

from __future__ import annotations

import csv
import json

import pytest

from tests.conftest import run_entry
from tests.soak.corrupt_shards import AA_TRAIN, DC_TRAIN, expected_counts, write_soak_shards

TOTAL = 40
SYSTEMS = {
    "animate_anyone": (
        AA_TRAIN,
        "spatial",
        ["experiment=animate_anyone_demo", "data.margin=2", "stages.spatial.data.batch_size=1"],
    ),
    "dynamicrafter": (
        DC_TRAIN,
        "finetune",
        ["experiment=dynamicrafter_demo", "data.num_frames=8", "data.stride_range=[1,1]", "data.batch_size=1"],
    ),
}


@pytest.fixture(scope="module")
def soak(tmp_path_factory):
    root = tmp_path_factory.mktemp("skip_soak")
    planted = write_soak_shards(root / "shards", TOTAL, block=5, at=0)
    assert sorted(planted.values()) == sorted(set(planted.values())) and len(planted) == 8
    return root / "shards", planted


def train_on_soak(tmp_path, shards, system: str, workers: int, ranks: int = 1, stop_at: int | None = None):
    table, stage, overrides = SYSTEMS[system]
    steps = (TOTAL - len(table)) // ranks  # every good sample once (the planted kinds the system reads are skipped)
    run_dir = tmp_path / "run"
    proc = run_entry(
        "src.train", *overrides, f"stage={stage}", "logger=csv", f"hydra.run.dir={run_dir}",
        f"paths.cache={tmp_path / 'cache'}", "data.demo=null", f"data.train_shards={shards}", "data.heldout_shards=null",
        "evaluation.heldout=false", "data.val.num_videos=0", "data.size=[16,16]", "data.resampled=false",
        "data.shuffle_buffer=0", f"data.num_workers={workers}", f"data.batches_per_epoch={steps}",
        f"stages.{stage}.trainer.max_steps={stop_at or steps}", "callbacks.skipped_samples.every_n_steps=10",
        *([f"trainer.devices={ranks}", "+trainer.strategy=ddp"] if ranks > 1 else []),
    )
    return run_dir, stage, steps, proc


def logged_counts(metrics_csv) -> dict[str, int]:
    """The newest value of each data/skipped/<reason> column the CSV logger wrote."""
    latest: dict[str, int] = {}
    with open(metrics_csv) as f:
        for row in csv.DictReader(f):
            latest.update({k.removeprefix("data/skipped/"): int(float(v)) for k, v in row.items()
                           if k.startswith("data/skipped/") and v})
    return dict(sorted(latest.items()))


def check_counts(run_dir, stage, steps, proc, expected) -> None:
    """summary.json, the CSV logger's newest values and the stage's last log line all hold `expected`."""
    assert sum(expected.values()) == 6
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["steps"] == {stage: steps}
    assert summary["skip_reasons"] == {stage: expected}
    assert summary["stages"][stage]["skipped_samples"] == 6
    assert logged_counts(run_dir / stage / "csv" / "metrics.csv") == expected
    total = f"6 ({', '.join(f'{k} {v}' for k, v in expected.items())})"
    assert f"skipped samples in this stage (all ranks and workers): {total}" in proc.stdout + proc.stderr


def test_animate_anyone_with_two_workers_stopped_and_resumed_counts_each_planted_defect_once(soak, tmp_path):
    """Stopped after 20 of the 34 steps, then resumed from that last.ckpt: the totals are the checkpoint's plus
    the new ones, exactly the planted defects (the loader resumes at its position, counting nothing twice)."""
    shards, planted = soak
    run_dir, stage, steps, _ = train_on_soak(tmp_path, shards, "animate_anyone", workers=2, stop_at=20)
    first = json.loads((run_dir / "summary.json").read_text())["skip_reasons"][stage]
    assert 0 < sum(first.values()) < 6
    (run_dir / stage / "final" / "stage.json").unlink()  # unfinished again: the rerun resumes from last.ckpt
    run_dir, stage, steps, proc = train_on_soak(tmp_path, shards, "animate_anyone", workers=2)
    assert json.loads((run_dir / "summary.json").read_text())["stages"][stage]["resumed_from_step"] == 20
    check_counts(run_dir, stage, steps, proc, dict(sorted(expected_counts(planted, AA_TRAIN).items())))


def test_dynamicrafter_on_two_ranks_with_two_workers_each_sums_every_rank_and_worker(soak, tmp_path):
    """Each of the four (rank, worker) slots meets some of the defects; rank 0's counts alone would be 3."""
    shards, planted = soak
    run_dir, stage, steps, proc = train_on_soak(tmp_path, shards, "dynamicrafter", workers=2, ranks=2)
    check_counts(run_dir, stage, steps, proc, dict(sorted(expected_counts(planted, DC_TRAIN).items())))
