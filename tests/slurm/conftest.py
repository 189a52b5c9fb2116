"""A real local SLURM cluster for the `slurm` tests, started once per session, plus helpers to submit
tiny trainings through slurm/*.sbatch exactly as users do.

Needs Debian's slurm-wlm and munge (`.ci/run` installs them) and root (slurmd runs jobs as root here).
Without them every test here is reported as skipped with the reason, never as passed.
"""

from __future__ import annotations

import csv
import os
import sys
import tempfile
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.slurm.local_cluster import LocalSlurmCluster, missing_binaries

# Tiny Animate Anyone spatial-stage runs (the integration tests' settings), per-step CSV losses, no held-out eval.
TINY = [
    "experiment=animate_anyone_demo",
    "logger=csv",
    "data.demo.num_train_videos=6",
    "data.demo.num_heldout_videos=2",
    "data.demo.num_frames=12",
    "data.num_workers=0",
    "data.val.num_videos=0",
    "model.sampling.num_steps=2",
    "stage=spatial",
    "evaluation.heldout=false",
    "stages.spatial.data.batch_size=2",
    "trainer.log_every_n_steps=1",
    "trainer.enable_progress_bar=false",
]


def _why_not_runnable() -> str | None:
    missing = missing_binaries()
    if missing:
        return f"SLURM/munge not installed (missing {', '.join(missing)}): apt-get install slurm-wlm munge"
    if os.geteuid() != 0:
        return "the local SLURM cluster runs slurmd as root; run the slurm tests as root (CI does)"
    return None


@pytest.fixture(scope="session")
def slurm_cluster():
    """munged + slurmctld + slurmd on this machine (real CPUs/memory), torn down after the session."""
    reason = _why_not_runnable()
    if reason:
        pytest.skip(reason)
    root = Path(tempfile.mkdtemp(prefix="slurm_cluster_"))
    cluster = LocalSlurmCluster(root)
    try:
        cluster.start()
    except Exception:
        cluster.stop()
        raise
    yield cluster
    cluster.stop()


@pytest.fixture(scope="session")
def slurm_demo_cache(tmp_path_factory) -> Path:
    """Demo shards for TINY generated once, in-process, through the runner's own data resolution."""
    from hydra import compose, initialize_config_dir

    from src.config import register_resolvers
    from src.trainers.runner import resolve_data

    register_resolvers()
    cache = tmp_path_factory.mktemp("slurm_demo_cache")
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=[*TINY, f"paths.cache={cache}"])
    resolve_data(cfg)
    return cache


def job_env(run_root: Path) -> dict[str, str]:
    """What the sbatch scripts read: this interpreter, the repo, where runs go; one thread per task on 2 cores."""
    return {
        "PYTHON": sys.executable,
        "PROJECT_ROOT": str(ROOT),
        "RUN_ROOT": str(run_root),
        "OMP_NUM_THREADS": "1",
        "WANDB_MODE": "offline",
        "HYDRA_FULL_ERROR": "1",
    }


# The scripts are written for GPU nodes; on this CPU box: no GPUs, one core per task, one task unless a test asks.
CPU_SBATCH = ["--gpus-per-node=0", "--cpus-per-task=1", "--ntasks-per-node=1", "--time=15"]


def step_losses(metrics_csv: Path) -> dict[int, float]:
    """train/loss per optimizer step from a CSV logger file."""
    with open(metrics_csv) as f:
        return {int(r["step"]): float(r["train/loss"]) for r in csv.DictReader(f) if r.get("train/loss")}


def job_log(out_dir: Path) -> str:
    return "\n".join(f"--- {p.name}\n{p.read_text()[-4000:]}" for p in sorted(out_dir.glob("*.out")))
