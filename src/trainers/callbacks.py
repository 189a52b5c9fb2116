"""Callbacks built from `callbacks:` config: checkpoints, learning rate, speed (samples/s, TFLOP/s, MFU), progress,
sample videos, preemption, NaN/Inf guard, skipped samples per reason."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback, LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.loggers import WandbLogger
from omegaconf import DictConfig

from src.data.video_io import write_mp4
from src.trainers.nonfinite import build_nonfinite_guard
from src.trainers.preemption import PreemptionCheckpoint
from src.trainers.progress_lines import build_progress
from src.trainers.skipped_samples import build_skipped_samples
from src.trainers.speed_monitor import build_speed_monitor


def to_uint8_frames(video: torch.Tensor, value_range: tuple[float, float] = (-1.0, 1.0)) -> np.ndarray:
    """`c t h w` tensor in `value_range` -> `t h w c` uint8 (the on-disk layout)."""
    lo, hi = value_range
    x = ((video.detach().float().cpu() - lo) / (hi - lo)).clamp(0, 1)
    return (x.permute(1, 2, 3, 0).numpy() * 255).round().astype(np.uint8)


def side_by_side(*videos: np.ndarray) -> np.ndarray:
    return np.concatenate(videos, axis=2)


class SampleVideoWriter(Callback):
    """Writes validation samples as mp4 ([pose |] generated | ground truth) and logs them to W&B.

    Ground truth is the batch's "frames" (Animate Anyone) or "video" (DynamiCrafter); pose only when present.
    """

    def __init__(self, out_dir: Path, max_videos: int = 2, fps: int = 8) -> None:
        self.out_dir = Path(out_dir)
        self.max_videos = max_videos
        self.fps = fps
        self.written: list[str] = []

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if not trainer.is_global_zero or batch_idx * len(batch["key"]) >= self.max_videos:
            return
        videos = getattr(pl_module, "last_validation_videos", None)
        if videos is None:
            return
        generated = videos["generated"]
        paths = []
        truth = batch["frames"] if "frames" in batch else batch["video"]
        for i in range(min(len(batch["key"]), self.max_videos - batch_idx * len(batch["key"]))):
            panels = [to_uint8_frames(batch["pose"][i], (0.0, 1.0))] if "pose" in batch else []
            frames = side_by_side(*panels, to_uint8_frames(generated[i]), to_uint8_frames(truth[i]))
            path = self.out_dir / f"step{trainer.global_step:07d}_{batch['key'][i]}.mp4"
            path.parent.mkdir(parents=True, exist_ok=True)
            write_mp4(path, frames, fps=self.fps)
            paths.append(str(path))
        self.written.extend(paths)
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.log_video("val/samples", paths, step=trainer.global_step, fps=[self.fps] * len(paths))


def batch_size_of(batch: dict) -> int:
    return len(batch["key"])


class LoggedLearningRateMonitor(LearningRateMonitor):
    """Lightning's LR monitor, silent when the run has no logger (logger=none) instead of refusing to start."""

    def on_train_start(self, trainer: L.Trainer, *args, **kwargs) -> None:
        if trainer.loggers:
            super().on_train_start(trainer, *args, **kwargs)

    def on_train_batch_start(self, trainer: L.Trainer, *args, **kwargs) -> None:
        if trainer.loggers:
            super().on_train_batch_start(trainer, *args, **kwargs)

    def on_train_epoch_start(self, trainer: L.Trainer, *args, **kwargs) -> None:
        if trainer.loggers:
            super().on_train_epoch_start(trainer, *args, **kwargs)


def build_callbacks(cfg: DictConfig, stage_dir: Path, stage: str = "train", progress_bar: bool = False) -> list[Callback]:
    """`progress_bar`: the trainer shows progress (`trainer.enable_progress_bar`), as a bar or as plain lines."""
    callbacks: list[Callback] = [
        ModelCheckpoint(
            dirpath=str(stage_dir / "checkpoints"),
            filename="step{step:07d}",
            auto_insert_metric_name=False,
            every_n_train_steps=cfg.checkpoint.every_n_train_steps,
            save_top_k=cfg.checkpoint.save_top_k,
            monitor=None,
            save_last=True,
        )
    ]
    if cfg.get("learning_rate_monitor", False):
        callbacks.append(LoggedLearningRateMonitor(logging_interval="step"))
    speed = build_speed_monitor(cfg.get("speed"), batch_size_of)
    if speed is not None:
        callbacks.append(speed)
    progress = build_progress(cfg.get("progress"), stage) if progress_bar else None
    if progress is not None:
        callbacks.append(progress)
    if cfg.get("sample_videos"):
        callbacks.append(
            SampleVideoWriter(stage_dir / "samples", cfg.sample_videos.max_videos, cfg.sample_videos.fps)
        )
    if cfg.get("preemption"):
        callbacks.append(PreemptionCheckpoint(**cfg.preemption))
    guard = build_nonfinite_guard(cfg.get("nonfinite"))
    if guard is not None:
        callbacks.append(guard)
    callbacks.append(build_skipped_samples(cfg.get("skipped_samples")))
    return callbacks


def find_callback(trainer: L.Trainer, cls: type) -> Callback | None:
    return next((c for c in trainer.callbacks if isinstance(c, cls)), None)
