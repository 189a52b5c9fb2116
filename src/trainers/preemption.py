"""Preemption and time limits: save at the next safe point, requeue the SLURM job, exit with a distinct status.

Signal handlers only set a flag: saving (or any collective) inside a handler can hang (Lightning #21406).
At the next training batch end where the optimizer has just stepped, all ranks agree on the flag (an
all-reduce of its maximum), every rank calls `trainer.save_checkpoint(<stage>/checkpoints/last.ckpt)` (rank 0
writes it), rank 0 runs `scontrol requeue` when the signal asks for a requeue and the process runs under
SLURM, and every rank raises `Preempted` (exit status `PREEMPTED_EXIT_CODE`), so the runner never marks the
stage finished and the next run (the requeued job) resumes from `last.ckpt` at its step.

Defaults: SIGUSR1 (what `#SBATCH --signal=SIGUSR1@90` sends before the time limit) and SIGTERM (what many
clusters send before killing a preempted job) both save and requeue: the same path. A `save_signals` entry
saves and exits without requeueing (e.g. SIGTERM where SLURM's PreemptMode=REQUEUE requeues by itself).

Exact replay needs no RNG state here: every training draw is keyed on (seed, global sample index, purpose)
(src.trainers.sample_draws, the one randomness scheme; the global RNG that dropout layers use is reseeded from
it at every step) and the train loader restores the sample numbering, so a resumed run draws what the
uninterrupted one would have on every rank. Checkpoints carry no RNG states: the copy this callback used to store
was rank 0's, restored on every rank of a DDP job, and was redundant with the keyed draws. Checkpoints written
with one still load (the entry is ignored).
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import signal
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.distributed as dist
from lightning.pytorch.callbacks import Callback, ModelCheckpoint

log = logging.getLogger(__name__)

# EX_TEMPFAIL from sysexits.h: "try again later" -- the run is unfinished and resumable.
PREEMPTED_EXIT_CODE = 75
SAVE, REQUEUE = 1, 2  # flag levels; the all-reduce keeps the strongest request of any rank

# Process-wide: a signal that lands between two stages (or two fits) is still acted on by the next one.
_pending = 0


class Preempted(SystemExit):
    """Raised on every rank after the preemption checkpoint was saved; the process exits with code 75."""

    def __init__(self, message: str) -> None:
        super().__init__(PREEMPTED_EXIT_CODE)
        self.message = message

    def __str__(self) -> str:
        return self.message


def _signal_number(name: str | int) -> signal.Signals:
    if isinstance(name, int):
        return signal.Signals(name)
    key = name.upper() if name.upper().startswith("SIG") else f"SIG{name.upper()}"
    if key not in signal.Signals.__members__:
        raise ValueError(
            f"callbacks.preemption: unknown signal {name!r}; use names such as SIGUSR1, SIGUSR2, SIGTERM."
        )
    return signal.Signals[key]


def slurm_job_to_requeue(env: dict[str, str] | None = None) -> str | None:
    """The id `scontrol requeue` takes: `<array job>_<task>` for an array task, else SLURM_JOB_ID; None outside SLURM."""
    env = dict(os.environ) if env is None else env
    if env.get("SLURM_ARRAY_JOB_ID") and env.get("SLURM_ARRAY_TASK_ID"):
        job = f"{env['SLURM_ARRAY_JOB_ID']}_{env['SLURM_ARRAY_TASK_ID']}"
    else:
        job = env.get("SLURM_JOB_ID")
    if job is not None and not re.fullmatch(r"[0-9]+(_[0-9]+)?", job):
        raise ValueError(f"SLURM job id {job!r} is not of the form N or N_M; cannot requeue it.")
    return job


def requeue_slurm_job(job: str) -> bool:
    """Runs `scontrol requeue <job>`; returns whether SLURM accepted it (a failure is logged, not raised)."""
    scontrol = shutil.which("scontrol")
    if scontrol is None:
        log.warning(
            "preemption: `scontrol` is not on PATH; job %s was not requeued (resubmit it by hand).", job
        )
        return False
    result = subprocess.run([scontrol, "requeue", job], capture_output=True, text=True)
    if result.returncode != 0:
        log.warning(
            "preemption: `scontrol requeue %s` failed (%d): %s", job, result.returncode, result.stderr.strip()
        )
        return False
    log.info("preemption: requeued SLURM job %s", job)
    return True


class PreemptionCheckpoint(Callback):
    """Turns a preemption/time-limit signal into: checkpoint at the next safe point, requeue, exit 75."""

    def __init__(
        self,
        requeue_signals: Sequence[str] = ("SIGUSR1", "SIGTERM"),
        save_signals: Sequence[str] = (),
        requeue: bool = True,
        check_every_n_steps: int = 10,
    ) -> None:
        if check_every_n_steps < 1:
            raise ValueError(f"callbacks.preemption.check_every_n_steps must be >= 1, got {check_every_n_steps}.")
        self.check_every_n_steps = int(check_every_n_steps)
        self.levels: dict[signal.Signals, int] = {_signal_number(s): SAVE for s in save_signals}
        self.levels.update({_signal_number(s): REQUEUE for s in requeue_signals})
        self.requeue = requeue
        self._step_at_batch_start = -1
        self.saved_path: Path | None = None

    # -- signals: handlers only record the request ----------------------------------------------------
    def _handle(self, signum: int, _frame: Any) -> None:
        global _pending
        _pending = max(_pending, self.levels.get(signal.Signals(signum), SAVE))

    def install_handlers(self) -> None:
        """Point the configured signals at the flag-setting handler (main thread only, as Python requires)."""
        if not hasattr(signal, "SIGUSR1"):  # Windows: nothing to catch
            return
        import threading

        if threading.current_thread() is not threading.main_thread():
            return
        for signum in self.levels:
            signal.signal(signum, self._handle)

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self.install_handlers()

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Lightning registers its SIGTERM notifier (which broadcasts inside the handler) after `setup`;
        # ours replaces it for the rest of the fit. Lightning's teardown restores the handlers it found: ours.
        self.install_handlers()

    # -- the safe point -----------------------------------------------------------------------------------
    def on_train_batch_start(self, trainer: L.Trainer, *args: Any, **kwargs: Any) -> None:
        self._step_at_batch_start = trainer.global_step

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any, **kwargs: Any
    ) -> None:
        if trainer.global_step == self._step_at_batch_start:
            return  # mid gradient accumulation: a checkpoint here would lose the accumulated gradients
        if self._distributed(trainer) and trainer.global_step % self.check_every_n_steps:
            return  # the ranks agree by an all-reduce read on the host: not every step (it stalls the GPU queue)
        level = self._agreed_level(trainer)
        if level:
            self._save_requeue_exit(trainer, level)

    @staticmethod
    def _distributed(trainer: L.Trainer) -> bool:
        return dist.is_available() and dist.is_initialized() and trainer.world_size > 1

    def _agreed_level(self, trainer: L.Trainer) -> int:
        if not self._distributed(trainer):
            return _pending  # a Python int: reading it costs no sync
        flag = torch.tensor([_pending], dtype=torch.int32, device=trainer.strategy.root_device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return int(flag.item())

    def checkpoint_path(self, trainer: L.Trainer) -> Path:
        """`<ModelCheckpoint dirpath>/last.ckpt` (the runner resumes from it), else `<default_root_dir>/checkpoints`."""
        checkpoint = next(
            (c for c in trainer.callbacks if isinstance(c, ModelCheckpoint) and c.dirpath), None
        )
        folder = Path(checkpoint.dirpath) if checkpoint else Path(trainer.default_root_dir) / "checkpoints"
        name = (checkpoint.CHECKPOINT_NAME_LAST if checkpoint else "last") + ModelCheckpoint.FILE_EXTENSION
        return folder / name

    def _save_requeue_exit(self, trainer: L.Trainer, level: int) -> None:
        global _pending
        path = self.checkpoint_path(trainer)
        if trainer.is_global_zero:
            log.warning("preemption: saving %s at step %d", path, trainer.global_step)
        # Every rank calls it (sharded strategies need all of them); it ends in a barrier.
        trainer.save_checkpoint(str(path))
        self.saved_path = path
        _pending = 0
        job = slurm_job_to_requeue()
        requeued = False
        if level >= REQUEUE and self.requeue and job is not None and trainer.is_global_zero:
            requeued = requeue_slurm_job(job)
        what = f"requeued SLURM job {job}" if requeued else "not requeued"
        raise Preempted(f"preempted at step {trainer.global_step}: saved {path}, {what}; rerun to resume.")
