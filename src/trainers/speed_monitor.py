"""Samples/s, TFLOP/s per device and MFU during training, through Lightning's ThroughputMonitor.

The FLOPs of one real training step (forward + backward of the first micro-batch, frozen encoders included) are
counted once with `torch.utils.flop_counter.FlopCounterMode` and handed to the ThroughputMonitor as the module's
`flops_per_batch`. Under activation checkpointing the count includes the recomputed forward (hardware FLOPs).
MFU is measured against the device's dense bf16 peak from a small table (`callbacks.speed.peak_tflops`, matched
by substring of the CUDA device name); unknown devices (and CPUs) get TFLOP/s but no MFU.

Unlike the stock monitor, the GPU is synchronised only every `every_n_steps` optimizer steps (a measurement
point): samples are counted on the host each batch, and the rate is taken between two synchronised points.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import ThroughputMonitor
from lightning.pytorch.trainer.states import RunningStage
from lightning.pytorch.utilities import rank_zero_only
from torch.utils.flop_counter import FlopCounterMode

log = logging.getLogger(__name__)

# Dense bf16 tensor-core peaks in TFLOP/s (vendor data sheets, no sparsity). First substring match wins.
DEFAULT_PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0}


def peak_flops(device: torch.device, table: Mapping[str, float]) -> float | None:
    """FLOP/s of `device` from `table` (device-name substring -> TFLOP/s), None when unknown or not CUDA."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    peak = peak_for_name(name, table)
    if peak is None:
        log.info("callbacks.speed: no peak for %r in peak_tflops %s; MFU not logged (add the device there)", name, dict(table))
    return peak


def peak_for_name(name: str, table: Mapping[str, float]) -> float | None:
    """FLOP/s of the first `table` key found in `name` (case-insensitive), None when none is."""
    return next((float(tflops) * 1e12 for key, tflops in table.items() if key.lower() in name.lower()), None)


class SpeedMonitor(ThroughputMonitor):
    """ThroughputMonitor with counted FLOPs, a configurable peak table and a GPU sync only at measurement points.

    After each measurement `latest` holds {"samples_per_sec", "tflops_per_device", "mfu"} (None where unknown)
    for progress lines.
    """

    def __init__(
        self,
        batch_size_fn: Callable[[Any], int],
        every_n_steps: int = 10,
        count_flops: bool = True,
        peak_tflops: Mapping[str, float] | None = None,
    ) -> None:
        if every_n_steps < 1:
            raise ValueError(f"callbacks.speed.every_n_steps must be >= 1, got {every_n_steps}.")
        super().__init__(batch_size_fn=batch_size_fn, window_size=2)
        self.every_n_steps = every_n_steps
        self.count_flops = count_flops
        self.peak_tflops = dict(DEFAULT_PEAK_TFLOPS if peak_tflops is None else peak_tflops)
        self.latest: dict[str, float | None] = {}
        self._counter: FlopCounterMode | None = None
        self._validation_started: float | None = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        self.available_flops = peak_flops(trainer.strategy.root_device, self.peak_tflops)
        for throughput in self._throughputs.values():
            throughput.available_flops = self.available_flops

    # ---------------------------------------------------------------------------------------- FLOPs
    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int) -> None:
        if self.count_flops and getattr(pl_module, "flops_per_batch", None) is None and self._counter is None:
            self._counter = FlopCounterMode(display=False)
            self._counter.__enter__()

    def _finish_count(self, pl_module: L.LightningModule) -> None:
        if self._counter is None:
            return
        self._counter.__exit__(None, None, None)
        pl_module.flops_per_batch = int(self._counter.get_total_flops())
        self._counter = None
        log.info("callbacks.speed: one training step = %.4g FLOPs per device", pl_module.flops_per_batch)

    # -------------------------------------------------------------------------------------- timing
    @rank_zero_only
    def on_train_start(self, trainer: L.Trainer, *_: Any) -> None:
        super().on_train_start(trainer)
        self._record(trainer, batches=0, flops=0)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int) -> None:
        self._finish_count(pl_module)
        if trainer.is_global_zero:
            self._batch_end(trainer, pl_module, batch)

    def _batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any) -> None:
        train = RunningStage.TRAINING
        self._samples[train] += self.batch_size_fn(batch)
        self._batches[train] += 1
        if trainer.fit_loop._should_accumulate() or trainer.global_step % self.every_n_steps:
            return
        throughput = self._throughputs[train]
        flops_per_batch = getattr(pl_module, "flops_per_batch", None)
        new_batches = self._batches[train] - throughput._batches[-1]
        self._record(trainer, self._batches[train], None if flops_per_batch is None else flops_per_batch * new_batches)
        metrics = throughput.compute()
        if "device/samples_per_sec" not in metrics:
            return
        self.latest = {  # all ranks' samples/s (Throughput leaves the global keys out when there is one device)
            "samples_per_sec": metrics.get("samples_per_sec", metrics["device/samples_per_sec"]),
            "tflops_per_device": metrics["device/flops_per_sec"] / 1e12 if "device/flops_per_sec" in metrics else None,
            "mfu": metrics.get("device/mfu"),
        }
        if trainer.loggers:
            trainer._logger_connector.log_metrics({f"train/{k}": v for k, v in metrics.items()}, step=trainer.global_step)

    def _record(self, trainer: L.Trainer, batches: int, flops: int | None) -> None:
        """One synchronised measurement point (the only GPU sync this callback makes)."""
        if trainer.strategy.root_device.type == "cuda":
            torch.cuda.synchronize()
        train = RunningStage.TRAINING
        self._throughputs[train].update(
            time=time.perf_counter() - self._t0s[train], batches=batches, samples=self._samples[train], flops=flops
        )

    # ------------------------------------------------------------------------- validation pauses the clock
    @rank_zero_only
    def on_validation_start(self, trainer: L.Trainer, *_: Any) -> None:
        self._validation_started = time.perf_counter()

    @rank_zero_only
    def on_validation_batch_end(self, *_: Any, **__: Any) -> None:
        pass

    @rank_zero_only
    def on_validation_end(self, trainer: L.Trainer, *_: Any) -> None:
        if RunningStage.TRAINING in self._t0s and getattr(self, "_validation_started", None) is not None:
            self._t0s[RunningStage.TRAINING] += time.perf_counter() - self._validation_started
        self._validation_started = None


def build_speed_monitor(cfg: Any, batch_size_fn: Callable[[Any], int]) -> SpeedMonitor | None:
    """`callbacks.speed` config -> the monitor, or None when disabled."""
    if cfg is None or not cfg.get("enabled", False):
        return None
    params = {k: v for k, v in dict(cfg).items() if k != "enabled"}
    if params.get("peak_tflops") is not None:
        params["peak_tflops"] = dict(params["peak_tflops"])
    return SpeedMonitor(batch_size_fn=batch_size_fn, **params)
