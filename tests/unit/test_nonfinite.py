"""NonFiniteGuard on a tiny CPU fit with injected NaN losses: skip-and-count leaves the weights untouched on the
bad steps (plain SGD), stop names the bad step and the last good checkpoint, and nothing poisoned is saved."""

from __future__ import annotations

import csv
import math

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger

from src.export import checkpoint_step
from src.trainers.nonfinite import NonFiniteGuard, NonFiniteLossError


class Regression(L.LightningModule):
    """Loss NaN (or Inf) at the listed steps; records the weights each step starts from."""

    def __init__(self, bad_at: dict[int, float]) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.layer = torch.nn.Linear(4, 1)
        self.bad_at = bad_at
        self.weights: dict[int, torch.Tensor] = {}

    def training_step(self, batch, batch_idx):
        self.weights[self.global_step] = self.layer.weight.detach().clone()
        x = batch[0]
        loss = torch.nn.functional.mse_loss(self.layer(x), x.sum(1, keepdim=True))
        if self.global_step in self.bad_at:
            loss = loss * self.bad_at[self.global_step]  # NaN or Inf, like an overflow in the forward
        return loss

    def on_train_end(self) -> None:
        self.weights[self.global_step] = self.layer.weight.detach().clone()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.05)


def _fit(tmp_path, module, guard, max_steps=8, every_n=1000, logger=False):
    trainer = L.Trainer(
        max_steps=max_steps,
        accelerator="cpu",
        logger=logger,
        log_every_n_steps=1,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=str(tmp_path),
        gradient_clip_val=1.0,
        callbacks=[
            ModelCheckpoint(dirpath=str(tmp_path / "ck"), every_n_train_steps=every_n, save_top_k=-1),
            guard,
        ],
    )
    data = torch.ones(64, 4) * torch.linspace(-1, 1, 4)
    trainer.fit(module, torch.utils.data.DataLoader(torch.utils.data.TensorDataset(data), batch_size=4))
    return trainer


def test_skip_zeroes_the_bad_steps_and_counts_them(tmp_path):
    bad = {2: math.nan, 5: math.inf}
    module = Regression(bad)
    guard = NonFiniteGuard(action="skip", check_every_n_steps=3)
    _fit(tmp_path, module, guard, logger=CSVLogger(tmp_path, name="log"))
    assert guard.bad_steps == 2 and guard.first_bad_step == 2
    with open(next((tmp_path / "log").rglob("metrics.csv"))) as f:
        logged = [float(r["train/nonfinite_steps"]) for r in csv.DictReader(f) if r.get("train/nonfinite_steps")]
    assert sorted(set(logged)) == [1.0, 2.0] and logged[-1] == 2.0  # the count as read at steps 3 and 6
    for step in range(8):
        moved = not torch.equal(module.weights[step + 1], module.weights[step])
        assert moved == (step not in bad), step  # a skipped step leaves the weights exactly as they were
    assert torch.isfinite(module.layer.weight).all()


def test_skip_stops_past_max_skipped(tmp_path):
    guard = NonFiniteGuard(action="skip", check_every_n_steps=2, max_skipped=1)
    with pytest.raises(NonFiniteLossError, match="max_skipped=1"):
        _fit(tmp_path, Regression({1: math.nan, 2: math.nan}), guard)


def test_stop_names_the_step_and_the_last_good_checkpoint_and_saves_nothing_poisoned(tmp_path):
    guard = NonFiniteGuard(action="stop", check_every_n_steps=50)
    with pytest.raises(NonFiniteLossError) as info:
        _fit(tmp_path, Regression({2: math.nan}), guard, every_n=1)
    saved = {checkpoint_step(p): p for p in (tmp_path / "ck").glob("*.ckpt")}
    assert sorted(saved) == [1, 2]  # the save at step 3 (after the bad step) was refused
    message = str(info.value)
    assert "stopped at step 3" in message and "NaN/Inf at step 2" in message
    assert f"last good checkpoint is {saved[2]} (step 2)" in message
    state = torch.load(saved[2], weights_only=True)["state_dict"]
    assert all(torch.isfinite(v).all() for v in state.values())


def test_stop_acts_on_the_flag_every_n_steps_only(tmp_path):
    guard = NonFiniteGuard(action="stop", check_every_n_steps=4)
    with pytest.raises(NonFiniteLossError, match="stopped at step 4: .* at step 1 .*no checkpoint"):
        _fit(tmp_path, Regression({1: math.nan}), guard)


def test_bad_settings_are_clear_errors():
    with pytest.raises(ValueError, match="callbacks.nonfinite.action"):
        NonFiniteGuard(action="ignore")
    with pytest.raises(ValueError, match="check_every_n_steps"):
        NonFiniteGuard(check_every_n_steps=0)
