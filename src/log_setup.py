"""Logs a person can read: one line per message, and the warnings we expect silenced (each says why).

Hydra gives the root logger a console and a file handler. Some libraries (Lightning, torchmetrics,
huggingface_hub) also attach their own stderr handler while still propagating to the root, so each of their
INFO lines printed twice. `tidy_logging` drops such handlers once the root prints; loggers that do not
propagate keep theirs. Unexpected warnings stay visible: only the messages listed here are filtered.
"""

from __future__ import annotations

import logging
import warnings

# (message regex, why it is expected here)
EXPECTED_WARNINGS = [
    (r".*Your `IterableDataset` has `__len__` defined",
     "our shard datasets define __len__ as the exact per-rank batch count (ExactBatchLoader); Lightning warns "
     "about multi-worker duplicates, which the per-worker shard split already rules out"),
    (r".*module\(s\) in eval mode at the start of training",
     "the frozen encoders (VAE/codec, CLIP) stay in eval mode on purpose: they are frozen and override train()"),
    (r".*When using the `ThroughputMonitor`, you need to define a `flops_per_batch`",
     "throughput is logged as samples/s; FLOPs per batch are not computed for diffusion UNets"),
    (r".*isinstance\(treespec, LeafSpec\)` is deprecated",
     "raised inside Lightning's own pytree helper on newer torch; nothing in this project calls it"),
]


# (logger, message start, why) of library log records we expect
EXPECTED_LOG_RECORDS = [
    ("diffusers.models.modeling_utils", "There are modules in UNetMotionModel that should be kept in float32: []",
     "diffusers says this on every .to() of a motion UNet, even when the list of such modules is empty"),
]


class _DropExpected(logging.Filter):
    def __init__(self, start: str) -> None:
        super().__init__()
        self.start = start

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.start)


def quiet_expected_warnings() -> None:
    for pattern, _why in EXPECTED_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)
    for name, start, _why in EXPECTED_LOG_RECORDS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropExpected) and f.start == start for f in logger.filters):
            logger.addFilter(_DropExpected(start))


def tidy_logging() -> None:
    """Drop library stderr handlers that duplicate the root's output (idempotent; call after imports)."""
    root = logging.getLogger()
    if not any(isinstance(h, logging.StreamHandler) for h in root.handlers):
        return  # nothing prints at the root (e.g. no Hydra): the libraries' own handlers are the only output
    for logger in list(logging.Logger.manager.loggerDict.values()):
        if not isinstance(logger, logging.Logger) or not logger.propagate:
            continue
        for handler in list(logger.handlers):
            if type(handler) is logging.StreamHandler:  # plain stderr/stdout printers, not files or NullHandlers
                logger.removeHandler(handler)


def readable_logs() -> None:
    quiet_expected_warnings()
    tidy_logging()
