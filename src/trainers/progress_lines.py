"""Training progress for logs that are files (SLURM jobs, `> log 2>&1`) and a rich bar for terminals.

A progress bar redraws one line with carriage returns, which a redirected log either never receives or keeps
as one unreadable line. When stdout is not a TTY, `ProgressLines` prints one plain line every `every_n_steps`
optimizer steps (and at the last one) from rank 0:

    [train spatial] step 200/1100 loss 0.1432 samples/s 11.9 TFLOP/s 0.41 MFU - ETA 0:05:21

Speed figures come from the SpeedMonitor (`callbacks.speed`) when it runs; ETA from the wall clock of this fit.
"""

from __future__ import annotations

import datetime
import sys
import time
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback, RichProgressBar, TQDMProgressBar
from lightning.pytorch.callbacks.progress.progress_bar import ProgressBar

from src.trainers.speed_monitor import SpeedMonitor

STYLES = ("auto", "rich", "tqdm", "lines")


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


class ProgressLines(ProgressBar):
    """Plain progress lines every N optimizer steps (Lightning's progress-bar slot, so no tqdm bar is added)."""

    def __init__(self, every_n_steps: int = 50, name: str = "train") -> None:
        super().__init__()
        if every_n_steps < 1:
            raise ValueError(f"callbacks.progress.every_n_steps must be >= 1, got {every_n_steps}.")
        self.every_n_steps = every_n_steps
        self.name = name
        self._enabled = True
        self._started = 0.0
        self._first_step = 0
        self._last_printed = -1

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._started = time.perf_counter()
        self._first_step = trainer.global_step
        self._last_printed = trainer.global_step

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int) -> None:
        step, total = trainer.global_step, trainer.max_steps
        if step == self._last_printed or not (step % self.every_n_steps == 0 or step == total):
            return
        self._last_printed = step
        if self._enabled and trainer.is_global_zero:
            print(self.line(trainer, step, total), flush=True)

    def line(self, trainer: L.Trainer, step: int, total: int) -> str:
        loss = trainer.progress_bar_metrics.get("train/loss")
        speed = next((c.latest for c in trainer.callbacks if isinstance(c, SpeedMonitor)), {})
        elapsed = time.perf_counter() - self._started
        done = step - self._first_step
        eta = "-"
        if total and total > 0 and done > 0:
            eta = str(datetime.timedelta(seconds=round(elapsed / done * (total - step))))
        of_total = f"/{total}" if total and total > 0 else ""
        return (
            f"[{self.name}] step {step}{of_total} loss {_fmt(loss, '.4f')} "
            f"samples/s {_fmt(speed.get('samples_per_sec'), '.3g')} "
            f"TFLOP/s {_fmt(speed.get('tflops_per_device'), '.3g')} "
            f"MFU {_fmt(speed.get('mfu'), '.1%')} ETA {eta}"
        )


def build_progress(cfg: Any, name: str, is_tty: bool | None = None) -> Callback | None:
    """`callbacks.progress` -> the progress callback: auto = rich bar on a terminal, plain lines otherwise."""
    if cfg is None:
        return None
    style = cfg.get("style", "auto")
    if style not in STYLES:
        raise ValueError(f"callbacks.progress.style={style!r}; expected one of {STYLES}.")
    if style == "auto":
        style = "rich" if (sys.stdout.isatty() if is_tty is None else is_tty) else "lines"
    if style == "rich":
        return RichProgressBar()
    if style == "tqdm":
        return TQDMProgressBar()
    return ProgressLines(every_n_steps=int(cfg.get("every_n_steps", 50)), name=name)
