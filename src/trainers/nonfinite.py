"""NaN/Inf losses and gradients: detected on the device every step, acted on every N steps.

Reading a flag on the host every step would stall the GPU queue, so each step only updates two device
tensors (how many steps were bad, the first bad step). The host reads them every `check_every_n_steps`
optimizer steps, before every checkpoint is written (so a poisoned checkpoint is never saved) and when
training ends. Two actions:

- `skip`: a bad step's gradients are zeroed on the device before the optimizer step (and before gradient
  clipping), so no NaN reaches the weights or the optimizer's moments; the step is counted
  (`train/nonfinite_steps`, kept in checkpoints). With momentum optimizers (Adam) the weights still move by
  the decayed momentum on that step. More than `max_skipped` bad steps stop the run as `stop` does.
  Under DeepSpeed ZeRO the gradients live in the engine's partitions: there DeepSpeed's own overflow check
  (`bf16.check_grad_overflow`, on by default, or fp16 loss scaling) skips the step without moving anything,
  and this guard counts the steps whose loss was not finite.
- `stop`: raise `NonFiniteLossError` naming the first bad step and the newest checkpoint saved before it.

Steps are numbered as `trainer.global_step` counts them: the bad step is the one taken when `global_step`
was S, so a checkpoint written at step <= S does not contain it.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.distributed as dist
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.strategies import DeepSpeedStrategy

log = logging.getLogger(__name__)

ACTIONS = ("skip", "stop")


class NonFiniteLossError(RuntimeError):
    """Training stopped because a loss or gradient was NaN/Inf."""


def newest_checkpoint_up_to(folder: Path | None, step: int) -> tuple[Path, int] | None:
    """The newest checkpoint in `folder` (.ckpt files or DeepSpeed directories) written at a step <= `step`."""
    from src.export import checkpoint_exists, checkpoint_step

    if folder is None or not folder.is_dir():
        return None
    found = []
    for path in folder.iterdir():
        if path.name.startswith(".") or not checkpoint_exists(path):
            continue
        try:
            saved = checkpoint_step(path)
        except Exception:  # unreadable: not a good checkpoint to point at
            continue
        if saved is not None and saved <= step:
            found.append((saved, path.stat().st_mtime, path))
    if not found:
        return None
    saved, _, path = max(found)
    return path, saved


class NonFiniteGuard(Callback):
    """Counts steps whose loss or gradients are not finite; skips them or stops (see the module docstring)."""

    def __init__(self, action: str = "skip", check_every_n_steps: int = 50, max_skipped: int | None = 100) -> None:
        if action not in ACTIONS:
            raise ValueError(f"callbacks.nonfinite.action={action!r}; expected one of {ACTIONS}.")
        if check_every_n_steps < 1:
            raise ValueError(f"callbacks.nonfinite.check_every_n_steps must be >= 1, got {check_every_n_steps}.")
        if max_skipped is not None and max_skipped < 0:
            raise ValueError(f"callbacks.nonfinite.max_skipped must be >= 0 or null, got {max_skipped}.")
        self.action = action
        self.check_every_n_steps = check_every_n_steps
        self.max_skipped = max_skipped
        self.bad_steps = 0  # host copy, as of the last check (and restored from checkpoints)
        self.first_bad_step: int | None = None
        self._count: torch.Tensor | None = None
        self._first: torch.Tensor | None = None
        self._loss_ok: torch.Tensor | None = None
        self._last_checked_step = -1

    # -- on the device, every step ------------------------------------------------------------------------
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage == "fit" and self.action == "skip" and isinstance(trainer.strategy, DeepSpeedStrategy):
            bf16 = (trainer.strategy.config or {}).get("bf16") or {}
            if bf16.get("check_grad_overflow") is False:
                raise ValueError(
                    "callbacks.nonfinite.action=skip relies on DeepSpeed's overflow check to skip a bad step under "
                    "ZeRO (the gradients live in its partitions), but the DeepSpeed config sets "
                    '"bf16": {"check_grad_overflow": false}; remove that, or set callbacks.nonfinite.action=stop.'
                )

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        device = pl_module.device
        self._count = torch.tensor(self.bad_steps, dtype=torch.int64, device=device)
        first = -1 if self.first_bad_step is None else self.first_bad_step
        self._first = torch.tensor(first, dtype=torch.int64, device=device)
        self._loss_ok = torch.ones((), dtype=torch.bool, device=device)
        self._last_checked_step = trainer.global_step

    def on_before_backward(self, trainer: L.Trainer, pl_module: L.LightningModule, loss: torch.Tensor) -> None:
        if self._loss_ok is not None:  # accumulated over the micro-batches of one optimizer step
            self._loss_ok &= torch.isfinite(loss.detach()).all()

    @torch.no_grad()
    def on_before_optimizer_step(
        self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        if self._count is None or self._loss_ok is None or self._first is None:
            return
        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        ok = self._loss_ok.clone()
        if grads:
            norms = torch._foreach_norm(grads)
            ok &= torch.isfinite(torch.stack([n.to(ok.device, torch.float32) for n in norms]).sum())
        bad = ~ok
        self._count += bad.long()
        step = torch.full_like(self._first, trainer.global_step)
        self._first.copy_(torch.where(bad & (self._first < 0), step, self._first))
        if self.action == "skip":
            for g in grads:
                g.nan_to_num_(0.0, 0.0, 0.0).mul_(ok.to(g.device))
        self._loss_ok.fill_(True)

    # -- on the host, every N steps and before each save ----------------------------------------------------
    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any, **kwargs: Any) -> None:
        step = trainer.global_step
        if step != self._last_checked_step and step % self.check_every_n_steps == 0:
            self.check(trainer, pl_module)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.check(trainer, pl_module, log_metric=False)  # Lightning allows no self.log here

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        if self._count is not None:  # stop before a checkpoint holding NaN weights is written
            self.check(trainer, pl_module, log_metric=False)
            checkpoint.setdefault("callbacks", {})[self.state_key] = self.state_dict()  # the counts just read

    def _read(self, trainer: L.Trainer) -> tuple[int, int]:
        assert self._count is not None and self._first is not None
        count, first = self._count.clone(), self._first.clone()
        first = torch.where(first < 0, torch.full_like(first, torch.iinfo(torch.int64).max), first)
        if dist.is_available() and dist.is_initialized() and trainer.world_size > 1:
            dist.all_reduce(count, op=dist.ReduceOp.MAX)  # every rank sees the same all-reduced gradients
            dist.all_reduce(first, op=dist.ReduceOp.MIN)
        first_value = int(first.item())
        return int(count.item()), (-1 if first_value == torch.iinfo(torch.int64).max else first_value)

    def check(self, trainer: L.Trainer, pl_module: L.LightningModule, log_metric: bool = True) -> None:
        """Read the device counters (one host sync); log new bad steps; stop when the action says so."""
        self._last_checked_step = trainer.global_step
        count, first = self._read(trainer)
        new = count - self.bad_steps
        self.bad_steps, self.first_bad_step = count, (first if first >= 0 else None)
        if log_metric and trainer.loggers:
            pl_module.log("train/nonfinite_steps", float(count), rank_zero_only=True)
        if not count:
            return
        too_many = self.action == "skip" and self.max_skipped is not None and count > self.max_skipped
        if self.action == "stop" or too_many:
            raise NonFiniteLossError(self._stop_message(trainer, count, first, too_many))
        if new:
            log.warning(
                "non-finite loss/gradients: %d step(s) skipped by step %d (%d in total, first at step %d)",
                new, trainer.global_step, count, first,
            )

    def _stop_message(self, trainer: L.Trainer, count: int, first: int, too_many: bool) -> str:
        folder = next(
            (Path(c.dirpath) for c in trainer.callbacks if isinstance(c, ModelCheckpoint) and c.dirpath), None
        )
        good = newest_checkpoint_up_to(folder, first)
        where = (
            f"the last good checkpoint is {good[0]} (step {good[1]})"
            if good
            else f"no checkpoint saved at or before step {first} was found in {folder}"
        )
        why = (
            f"{count} steps had a non-finite loss or gradients, more than callbacks.nonfinite.max_skipped="
            f"{self.max_skipped}"
            if too_many
            else f"the loss or gradients were NaN/Inf at step {first} ({count} bad step(s) in total)"
        )
        return (
            f"stopped at step {trainer.global_step}: {why}; {where}. Lower the learning rate or check the data, then "
            "resume from that checkpoint (copy it to checkpoints/last.ckpt), or set callbacks.nonfinite.action=skip."
        )

    # -- the counters travel with checkpoints ----------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"bad_steps": self.bad_steps, "first_bad_step": self.first_bad_step}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.bad_steps = int(state_dict.get("bad_steps", 0))
        self.first_bad_step = state_dict.get("first_bad_step")


def build_nonfinite_guard(cfg: Any) -> NonFiniteGuard | None:
    """`callbacks.nonfinite` config -> the callback, or None when `enabled` is false."""
    if cfg is None or not cfg.get("enabled", True):
        return None
    return NonFiniteGuard(**{k: v for k, v in dict(cfg).items() if k != "enabled"})
