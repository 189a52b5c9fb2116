"""Evaluation results to W&B: summary values, a metrics table and a few sample videos.

The mode follows training's logger config (src.wandb_mode): `logger.wandb.mode` auto = online with
an API key, offline (files under `<run>/wandb`, `wandb sync` later) without; no `wandb` entry or mode
disabled = no W&B at all. The run id is stable per run dir, so a rerun or a merge updates the same run.
"""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig

from src.wandb_mode import resolve_wandb_mode, stable_run_id

log = logging.getLogger(__name__)


def wandb_mode(logger_cfg: DictConfig | None) -> str | None:
    """"online", "offline" or None (no W&B) from `logger.wandb.mode`, as training decides it."""
    if logger_cfg is None or "wandb" not in logger_cfg:
        return None
    return resolve_wandb_mode(logger_cfg.wandb.mode)


def metrics_table_rows(results: dict) -> list[list]:
    """[protocol, metric, value, higher_is_better] per metric value."""
    higher = results.get("higher_is_better", {})
    rows = []
    for name, value in results["metrics"].items():
        base = name[: -len("_std")] if name.endswith("_std") else name
        rows.append([results["protocol"], name, float(value), higher.get(base)])
    return rows


def log_results(cfg: DictConfig, run_dir: Path, results: dict) -> str | None:
    """Log `results` (metrics.json's content) to W&B; returns the mode used (None when W&B is off)."""
    mode = wandb_mode(cfg.get("logger"))
    if mode is None:
        return None
    import wandb

    w = cfg.logger.wandb
    if mode == "offline":
        log.info("W&B: no API key configured, logging offline under %s/wandb", run_dir)
    run = wandb.init(
        project=w.project,
        entity=w.entity,
        group=w.get("group") or f"eval-{results['protocol']}",
        tags=list(w.get("tags") or []),
        name=f"{cfg.run_name}-eval",
        job_type="eval",
        dir=str(run_dir),
        mode=mode,
        id=stable_run_id(run_dir, f"eval-{results['protocol']}"),
        resume="allow",
        config={"protocol": results["protocol"], "eval": results["config"].get("eval", {})},
    )
    try:
        run.summary.update({f"eval/{name}": value for name, value in results["metrics"].items()})
        run.summary.update({f"eval/counts/{k}": v for k, v in results["counts"].items() if isinstance(v, int)})
        table = wandb.Table(columns=["protocol", "metric", "value", "higher_is_better"],
                            data=metrics_table_rows(results))
        payload = {"eval/metrics": table}
        videos = [wandb.Video(path, format="mp4") for path in results.get("samples", []) if Path(path).is_file()]
        if videos:
            payload["eval/samples"] = videos
        run.log(payload)
    finally:
        run.finish()
    return mode
