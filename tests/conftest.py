"""Shared fixtures: the generated demo data is made once per test session, and GPU/SLURM marks skip cleanly."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def shared_data(name: str) -> Path:
    """`shared/data/<name>` beside the checkout (the workspace layout) or inside it; the first that exists."""
    candidates = [ROOT.parent / "shared" / "data" / name, ROOT / "shared" / "data" / name]
    return next((path for path in candidates if path.exists()), candidates[0])


def pytest_collection_modifyitems(config, items):
    import torch

    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords and not torch.cuda.is_available():
            item.add_marker(skip_gpu)


@pytest.fixture(scope="session")
def demo_cache(tmp_path_factory) -> Path:
    """A cache dir shared by the integration tests, so demo shards are generated once."""
    return tmp_path_factory.mktemp("demo_cache")


def run_entry(module: str, *overrides: str, cwd: Path = ROOT, timeout: int = 900, check: bool = True):
    """Runs `python -m <module> overrides...` the way a user does; returns the CompletedProcess."""
    env = dict(os.environ, WANDB_MODE="offline", PYTHONUNBUFFERED="1", HYDRA_FULL_ERROR="1")
    proc = subprocess.run(
        [sys.executable, "-m", module, *overrides],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"{module} {' '.join(overrides)} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-8000:]}")
    return proc
