"""One line per log message, expected warnings silenced (unexpected ones kept), a run header, no W&B noise."""

from __future__ import annotations

import io
import logging
import warnings
from pathlib import Path

import lightning as L
import pytest
from omegaconf import OmegaConf

from src.log_setup import EXPECTED_LOG_RECORDS, EXPECTED_WARNINGS, quiet_expected_warnings, tidy_logging


@pytest.fixture
def root_printing_like_hydra():
    """The root logger with one stream handler (what Hydra's job logging sets up); restored afterwards."""
    root, stream = logging.getLogger(), io.StringIO()
    handler = logging.StreamHandler(stream)
    saved = (root.handlers[:], root.level, logging.getLogger("lightning").handlers[:])
    root.handlers, root.level = [handler], logging.INFO
    logging.getLogger("lightning").addHandler(logging.StreamHandler(io.StringIO()))  # what lightning adds on import
    yield stream
    root.handlers, root.level = saved[0], saved[1]
    logging.getLogger("lightning").handlers = saved[2]


def test_a_library_message_is_printed_once(root_printing_like_hydra) -> None:
    lightning_stream = logging.getLogger("lightning").handlers[-1].stream
    logging.getLogger("lightning.pytorch.utilities.rank_zero").info("GPU available: False")
    assert lightning_stream.getvalue().count("GPU available") == 1  # the duplicate printer before tidying
    tidy_logging()
    logging.getLogger("lightning.pytorch.utilities.rank_zero").info("TPU available: False")
    assert "TPU available" not in lightning_stream.getvalue()
    assert root_printing_like_hydra.getvalue().count("TPU available") == 1


def test_expected_warnings_are_silenced_and_others_stay() -> None:
    messages = [
        "Your `IterableDataset` has `__len__` defined. In combination with multi-process data loading ...",
        "Found 36 module(s) in eval mode at the start of training. This may lead to unexpected behavior",
        "When using the `ThroughputMonitor`, you need to define a `flops_per_batch` attribute",
    ]
    assert len(messages) + 1 == len(EXPECTED_WARNINGS)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quiet_expected_warnings()
        for message in messages:
            warnings.warn(message, UserWarning, stacklevel=1)
        warnings.warn("an unexpected problem", UserWarning, stacklevel=1)
    assert [str(w.message) for w in caught] == ["an unexpected problem"]
    name, start, _ = EXPECTED_LOG_RECORDS[0]
    record = logging.LogRecord(name, logging.WARNING, "", 0, start, None, None)
    assert not all(f.filter(record) for f in logging.getLogger(name).filters)


def test_wandb_logger_does_not_pass_the_anonymous_setting(tmp_path) -> None:
    from src.trainers.loggers import build_loggers

    cfg = OmegaConf.create({"wandb": {"mode": "offline", "project": "p", "entity": None, "group": None, "tags": []}})
    (logger,) = build_loggers(cfg, tmp_path, "run", "spatial")
    assert "anonymous" not in logger._wandb_init and logger._wandb_init["project"] == "p"


def test_run_header_states_devices_global_batch_steps_outputs_and_weights(tmp_path) -> None:
    from src.trainers.runner import run_header

    cfg = OmegaConf.create({
        "run_name": "animate_anyone", "data": {"batch_size": 2},
        "model": {"_target_": "src.trainers.animate_anyone.AnimateAnyoneModule",
                  "codec": {"_target_": "src.models.codecs.VAECodec", "path": "/w/sd-vae-ft-mse"}},
    })
    trainer = L.Trainer(accelerator="cpu", devices=1, max_steps=30, accumulate_grad_batches=4, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    header = run_header(cfg, "spatial", Path("/runs/a/spatial"), trainer, None, resumed_from=10)
    assert "stage spatial (AnimateAnyoneModule)" in header
    assert "global 8 = 2 per device x 1 device(s) x 4 accumulation step(s)" in header
    assert "steps      30, resuming at step 10" in header
    assert "/runs/a/spatial" in header and "model.codec.path = /w/sd-vae-ft-mse" in header
    assert "init from  the pretrained files below" in header
    cfg.model = {"_target_": "src.trainers.animate_anyone.AnimateAnyoneModule"}  # nothing pretrained: said so
    assert "init from  random init (no pretrained file set)" in run_header(cfg, "spatial", Path("/r"), trainer, None, None)
