"""Speed monitor: the counted FLOPs of a real step, the peak table, the logged rates, syncs only at measurements."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from torch import nn

from src.trainers.speed_monitor import DEFAULT_PEAK_TFLOPS, SpeedMonitor, build_speed_monitor, peak_for_name

IN, OUT, BATCH = 8, 4, 3


class LinearModule(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(IN, OUT, bias=False)

    def training_step(self, batch, batch_idx):
        return self.lin(batch["x"]).square().mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


class Points(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return 64

    def __getitem__(self, i: int) -> dict:
        return {"x": torch.randn(IN), "key": str(i)}


def fit(monitor: SpeedMonitor, steps: int, accumulate: int = 1) -> LinearModule:
    module = LinearModule()
    trainer = L.Trainer(
        max_steps=steps, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, callbacks=[monitor], accumulate_grad_batches=accumulate,
    )
    trainer.fit(module, torch.utils.data.DataLoader(Points(), batch_size=BATCH))
    return module


def test_flops_counted_once_and_rates_measured_between_synchronised_points_only(monkeypatch):
    records = []
    original = SpeedMonitor._record

    def spy(self, trainer, batches, flops):
        records.append((batches, flops))
        original(self, trainer, batches, flops)

    monkeypatch.setattr(SpeedMonitor, "_record", spy)
    monitor = SpeedMonitor(lambda b: len(b["key"]), every_n_steps=3)
    module = fit(monitor, steps=6, accumulate=2)
    # counted once, on one real micro-batch: forward x @ W^T is 2*n*in*out; backward only dL/dW (the input needs
    # no gradient): 2*n*in*out
    assert module.flops_per_batch == 4 * BATCH * IN * OUT
    # train start, then optimizer steps 3 and 6 (12 micro-batches): never per batch
    assert [batches for batches, _ in records] == [0, 6, 12]
    assert [flops for _, flops in records] == [0, 6 * module.flops_per_batch, 6 * module.flops_per_batch]
    latest = monitor.latest
    assert latest["samples_per_sec"] > 0 and latest["mfu"] is None  # a CPU has no peak in the table
    per_sample = module.flops_per_batch / BATCH
    assert latest["tflops_per_device"] == pytest.approx(latest["samples_per_sec"] * per_sample / 1e12)


def test_peak_table_matches_device_names_and_config_overrides_it():
    assert peak_for_name("NVIDIA H100 80GB HBM3", DEFAULT_PEAK_TFLOPS) == 989e12
    assert peak_for_name("NVIDIA H200", DEFAULT_PEAK_TFLOPS) == 989e12
    assert peak_for_name("NVIDIA A100-SXM4-80GB", DEFAULT_PEAK_TFLOPS) == 312e12
    assert peak_for_name("Tesla T4", DEFAULT_PEAK_TFLOPS) is None
    monitor = build_speed_monitor({"enabled": True, "every_n_steps": 5, "peak_tflops": {"T4": 65}}, len)
    assert peak_for_name("Tesla T4", monitor.peak_tflops) == 65e12
    assert build_speed_monitor({"enabled": False}, len) is None
    with pytest.raises(ValueError, match="every_n_steps"):
        build_speed_monitor({"enabled": True, "every_n_steps": 0}, len)
