"""Skipped training samples per reason, summed over every rank and every DataLoader worker.

Workers are separate processes, so their counts travel the one way their samples do: each batch's "skipped"
holds, per sample, the skips its worker met just before it ({reason: count}, src.data.sample_stream). This
callback adds them up on each rank as batches arrive (plain python ints: no device sync) and sums the ranks
(one `all_gather_object` of a small dict, since ranks may meet different reasons) every `every_n_steps`
optimizer steps, before each checkpoint and when training ends. Then it logs `data/skipped/<reason>` and
`data/skipped_total`, writes a plain log line when the counts grew, and keeps the totals for checkpoints and
for summary.json (`skip_reasons` and `skipped_samples` per stage).

What is counted is what training consumed: a resumed run starts from the checkpoint's totals, and the loader
resumes at its saved stream positions (src.data.sample_stream: a skip rides on the next usable sample of its
own lane, which the checkpoint's position includes or not), so no skip is counted twice or lost.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any

import lightning as L
import torch.distributed as dist
from lightning.pytorch.callbacks import Callback

log = logging.getLogger(__name__)


def describe(counts: dict[str, int]) -> str:
    """'12 (undecodable 5, too_short 7)' or 'none'."""
    total = sum(counts.values())
    return f"{total} ({', '.join(f'{k} {v}' for k, v in counts.items())})" if total else "none"


class SkippedSamples(Callback):
    """Counts the skipped samples behind the training batches, per reason, over all ranks and workers."""

    def __init__(self, every_n_steps: int = 50) -> None:
        if every_n_steps < 1:
            raise ValueError(f"callbacks.skipped_samples.every_n_steps must be >= 1, got {every_n_steps}.")
        self.every_n_steps = every_n_steps
        self.restored: Counter[str] = Counter()  # all ranks' totals in the checkpoint this fit resumed from
        self.local: Counter[str] = Counter()  # this rank's counts since this fit started
        self.totals: dict[str, int] = {}  # all ranks, as of the last sum
        self._last_step = -1

    @property
    def total(self) -> int:
        return sum(self.totals.values())

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._last_step = trainer.global_step

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        # at the start: the loader's saved position already includes this batch, so a checkpoint taken at the
        # end of this step must count its skips
        for counts in batch.get("skipped", ()) if isinstance(batch, dict) else ():
            self.local.update(counts)

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any, **kwargs: Any
    ) -> None:
        step = trainer.global_step  # the same on every rank, so every rank joins the same collectives
        if step != self._last_step and step % self.every_n_steps == 0:
            self._last_step = step
            self.report(trainer, pl_module)

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        # every rank saves (rank 0 writes), so summing the ranks here is a safe collective
        self.report(trainer, pl_module, log_metric=False)
        checkpoint.setdefault("callbacks", {})[self.state_key] = self.state_dict()

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.report(trainer, pl_module, log_metric=False)  # Lightning allows no self.log here, so:
        for logger in trainer.loggers:  # the final totals go to the loggers directly (rank 0 only)
            logger.log_metrics(self.metrics(), step=trainer.global_step)
        if trainer.is_global_zero:
            log.info("skipped samples in this stage (all ranks and workers): %s", describe(self.totals))

    def sum_ranks(self, trainer: L.Trainer) -> dict[str, int]:
        """The checkpoint's totals plus every rank's counts since; a collective when there are several ranks."""
        parts: list[Any] = [dict(self.local)]
        if dist.is_available() and dist.is_initialized() and trainer.world_size > 1:
            parts = [None] * dist.get_world_size()
            dist.all_gather_object(parts, dict(self.local))
        total = Counter(self.restored)
        for part in parts:
            total.update(part)
        return dict(sorted(total.items()))

    def report(self, trainer: L.Trainer, pl_module: L.LightningModule, log_metric: bool = True) -> None:
        totals = self.sum_ranks(trainer)
        grew, self.totals = totals != self.totals, totals
        if log_metric and trainer.loggers:
            pl_module.log_dict(self.metrics(), rank_zero_only=True)
        if grew and trainer.is_global_zero:
            log.info(
                "skipped samples by step %d (all ranks and workers): %s",
                trainer.global_step,
                describe(totals),
            )

    def metrics(self) -> dict[str, float]:
        """`data/skipped_total` and `data/skipped/<reason>` as of the last sum."""
        return {"data/skipped_total": float(self.total)} | {
            f"data/skipped/{r}": float(n) for r, n in self.totals.items()
        }

    # -- the totals travel with checkpoints ------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"totals": dict(self.totals)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.restored = Counter({str(k): int(v) for k, v in state_dict.get("totals", {}).items()})
        self.totals = dict(sorted(self.restored.items()))
        self.local = Counter()


def build_skipped_samples(cfg: Any) -> SkippedSamples:
    """`callbacks.skipped_samples` config -> the callback; always on (a skip must never go unreported)."""
    return SkippedSamples(**dict(cfg or {}))
