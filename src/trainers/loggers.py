"""Experiment loggers from config: W&B (online with a key, offline without), CSV, or none."""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

from lightning.pytorch.loggers import CSVLogger, Logger, WandbLogger
from omegaconf import DictConfig

log = logging.getLogger(__name__)
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


def build_loggers(cfg: DictConfig, run_dir: Path, run_name: str, job: str) -> list[Logger]:
    loggers: list[Logger] = []
    if "wandb" in cfg:
        w = cfg.wandb
        if w.mode not in WANDB_MODES:
            raise ValueError(f"logger.wandb.mode={w.mode!r}; expected one of {WANDB_MODES}.")
        if w.mode != "disabled":
            offline = w.mode == "offline" or (w.mode == "auto" and not wandb_key_configured())
            if offline:
                log.info("W&B: no API key configured, logging offline under %s/wandb", run_dir)
            loggers.append(
                WandbLogger(
                    name=f"{run_name}-{job}",
                    save_dir=str(run_dir),
                    project=w.project,
                    entity=w.entity,
                    group=w.group,
                    tags=list(w.tags),
                    job_type=job,
                    offline=offline,
                    id=stable_run_id(run_dir, job),
                    resume="allow",
                )
            )
    if "csv" in cfg:
        loggers.append(CSVLogger(save_dir=str(run_dir / job), name="csv", version=""))
    return loggers


def finish_wandb(loggers: list[Logger]) -> None:
    """Close W&B runs so the next stage of the same process starts its own run."""
    for logger in loggers:
        if isinstance(logger, WandbLogger) and logger._experiment is not None:
            logger.experiment.finish()
