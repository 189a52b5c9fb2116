"""How W&B runs are opened, decided once for training, evaluation and reports.

`logger.wandb.mode`: auto = online with an API key, offline (files under `<run>/wandb`, `wandb sync` later)
without; online / offline / disabled as named. The run id is stable per run dir and job, so every rank and
every requeue of a run (or a rerun of an evaluation) writes to the same W&B run instead of forking it.
Lives below both `src.trainers` and `src.eval` so that evaluation does not import the trainers.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

WANDB_MODES = ("auto", "online", "offline", "disabled")


def wandb_key_configured() -> bool:
    """True when W&B has credentials: WANDB_API_KEY or a `wandb login` entry in ~/.netrc."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    netrc = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    return netrc.is_file() and "api.wandb.ai" in netrc.read_text(errors="ignore")


def stable_run_id(run_dir: Path, job: str) -> str:
    """Same id for every rank and every requeue of a run, so W&B resumes the run instead of forking it."""
    return hashlib.sha1(f"{run_dir.resolve()}::{job}".encode()).hexdigest()[:16]


def resolve_wandb_mode(mode: str) -> str | None:
    """"online", "offline" or None (no W&B) for a `logger.wandb.mode` value; raises on an unknown one."""
    if mode not in WANDB_MODES:
        raise ValueError(
            f"logger.wandb.mode={mode!r}: expected one of {WANDB_MODES} (e.g. logger.wandb.mode=offline)."
        )
    if mode == "disabled":
        return None
    if mode == "offline" or (mode == "auto" and not wandb_key_configured()):
        return "offline"
    return "online"
