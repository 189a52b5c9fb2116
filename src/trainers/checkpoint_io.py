"""Lightning checkpoint files written atomically, and the trainer plugins every run gets.

Lightning's own writer (`TorchCheckpointIO`) stages the file under the system temp folder and then *moves* it
onto the real name without an fsync: when /tmp is another file system (the usual case on clusters) that move
is a copy, and a SIGKILL or a full disk during it leaves a truncated `last.ckpt` that the rerun cannot load.
`AtomicCheckpointIO` streams `torch.save` into a temporary file beside the real one, fsyncs and renames it
(`src.atomic_io`), so the previous checkpoint stays loadable until the new one is complete.
DeepSpeed checkpoints (directories) are made atomic by `src.trainers.strategies.save_engine_checkpoint`.
"""

from __future__ import annotations

import logging
from typing import Any

from lightning.fabric.plugins.environments import SLURMEnvironment
from lightning.pytorch.plugins.io import TorchCheckpointIO

from src import atomic_io

log = logging.getLogger(__name__)


class AtomicCheckpointIO(TorchCheckpointIO):
    """TorchCheckpointIO whose save is temp-in-the-same-folder + fsync + rename."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError(
                f"AtomicCheckpointIO does not take storage_options (got {storage_options!r}); leave them unset."
            )
        atomic_io.torch_save(checkpoint, path)


def trainer_plugins(auto_requeue: bool = False) -> list:
    """`trainer.plugins`: atomic checkpoint files, plus (under SLURM) Lightning's SLURM environment with its own
    requeue off (it saves inside the signal handler, which can hang); callbacks.preemption requeues instead."""
    plugins: list = [AtomicCheckpointIO()]
    if SLURMEnvironment.detect():
        plugins.append(SLURMEnvironment(auto_requeue=auto_requeue))
    return plugins
