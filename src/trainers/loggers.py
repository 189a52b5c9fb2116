"""Experiment loggers from config: W&B (online with a key, offline without), CSV, or none."""

from __future__ import annotations

import logging
from pathlib import Path

from lightning.pytorch.loggers import CSVLogger, Logger, WandbLogger
from omegaconf import DictConfig

from src.wandb_mode import resolve_wandb_mode, stable_run_id

log = logging.getLogger(__name__)


def build_loggers(cfg: DictConfig, run_dir: Path, run_name: str, job: str) -> list[Logger]:
    loggers: list[Logger] = []
    if "wandb" in cfg:
        w = cfg.wandb
        mode = resolve_wandb_mode(w.mode)
        if mode is not None:
            offline = mode == "offline"
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
            # Lightning always passes anonymous=None to wandb.init, which W&B >= 0.19 answers with "The anonymous
            # setting has no effect" although nothing here asks for anonymous logging: leave the key out.
            loggers[-1]._wandb_init.pop("anonymous", None)
    if "csv" in cfg:
        loggers.append(CSVLogger(save_dir=str(run_dir / job), name="csv", version=""))
    return loggers


def finish_wandb(loggers: list[Logger]) -> None:
    """Close W&B runs so the next stage of the same process starts its own run."""
    for logger in loggers:
        if isinstance(logger, WandbLogger) and logger._experiment is not None:
            logger.experiment.finish()
