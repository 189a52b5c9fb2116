"""PreemptionCheckpoint on a tiny CPU fit: a signal only sets a flag; the next optimizer step saves last.ckpt,
requeues under SLURM and exits 75; resuming replays the same random draws as an uninterrupted run, with no RNG
state in the checkpoint (draws keyed per step, as src.trainers.sample_draws keys the framework's)."""

from __future__ import annotations

import os
import signal

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from src.trainers import preemption
from src.trainers.preemption import PREEMPTED_EXIT_CODE, Preempted, PreemptionCheckpoint, slurm_job_to_requeue


class NoisyRegression(L.LightningModule):
    """Loss depends on global-RNG noise and dropout, keyed on the step the way the framework's modules key theirs
    (`SampleDraws.reseed_global_rng`), so replaying a step needs its index, not a saved RNG state."""

    def __init__(self, signal_at_step: int | None = None) -> None:
        super().__init__()
        self.layer = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Dropout(0.5), torch.nn.Linear(8, 1))
        self.signal_at_step = signal_at_step
        self.losses: dict[int, float] = {}

    def training_step(self, batch, batch_idx):
        torch.manual_seed(1000 + self.global_step)
        x = batch[0]
        y = x.sum(dim=1, keepdim=True) + 0.1 * torch.randn(x.shape[0], 1)
        loss = torch.nn.functional.mse_loss(self.layer(x), y)
        self.losses[self.global_step] = float(loss)
        if self.signal_at_step is not None and self.global_step == self.signal_at_step:
            os.kill(os.getpid(), signal.SIGUSR1)  # handler only flags; the save waits for the step's end
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.05)


def _loader():
    data = torch.ones(64, 4) * torch.linspace(-1, 1, 4)  # identical batches: only the RNG varies the loss
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(data), batch_size=4)


def _seeded(cls=None, **kwargs):
    """Like the runner: seed, then build the module (so every run starts from the same weights)."""
    L.seed_everything(0)
    return (cls or NoisyRegression)(**kwargs)


def _fit(tmp_path, module, max_steps, ckpt=None, **callback_kwargs):
    trainer = L.Trainer(
        max_steps=max_steps,
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=str(tmp_path),
        callbacks=[
            ModelCheckpoint(dirpath=str(tmp_path / "checkpoints"), save_last=True, every_n_train_steps=1000),
            PreemptionCheckpoint(**callback_kwargs),
        ],
    )
    trainer.fit(module, _loader(), ckpt_path=ckpt)
    return trainer


@pytest.fixture(autouse=True)
def _restore_signal_handlers():
    saved = {s: signal.getsignal(s) for s in (signal.SIGUSR1, signal.SIGTERM)}
    yield
    for s, h in saved.items():
        signal.signal(s, h)
    preemption._pending = 0


def _preempt(tmp_path, monkeypatch):
    """A fit signalled at step 3 of 8: saves last.ckpt after that step, requeues (SLURM array task), exits 75."""
    requeued = []
    monkeypatch.setattr(preemption, "requeue_slurm_job", lambda job: requeued.append(job) or True)
    monkeypatch.setenv("SLURM_JOB_ID", "77")
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "70")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "3")
    first = _seeded(signal_at_step=3)
    with pytest.raises(Preempted) as info:
        _fit(tmp_path, first, max_steps=8)
    assert info.value.code == PREEMPTED_EXIT_CODE
    assert requeued == ["70_3"]
    last = tmp_path / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True)["global_step"] == 4  # saved after step 3 completed
    return first, last


def test_signal_saves_at_next_step_requeues_and_resume_replays_the_same_draws(tmp_path, monkeypatch):
    reference = _seeded()
    _fit(tmp_path / "ref", reference, max_steps=8)
    first, last = _preempt(tmp_path / "run", monkeypatch)
    resumed = _seeded()
    _fit(tmp_path / "run", resumed, max_steps=8, ckpt=str(last))
    assert first.losses == {s: reference.losses[s] for s in range(4)}
    assert sorted(resumed.losses) == [4, 5, 6, 7]
    assert resumed.losses == {s: reference.losses[s] for s in range(4, 8)}


class RecordsRngAtStart(NoisyRegression):
    def on_train_start(self) -> None:  # after the callbacks' on_train_start
        self.rng_at_start = torch.get_rng_state()


def test_checkpoints_carry_no_rng_state_and_a_resume_keeps_this_processs_own(tmp_path, monkeypatch):
    """Under DDP only rank 0's callback state is saved: a stored RNG state (the old `restore_rng`) was set on every
    rank at resume, replacing each rank's own. Now nothing RNG-related is saved or restored: the resumed fit starts
    with the global RNG this process's own seeding gave it, the same as a fit started without a checkpoint."""
    _, last = _preempt(tmp_path / "run", monkeypatch)
    saved = torch.load(last, weights_only=True)
    assert not any("rng" in state for state in saved["callbacks"].values())
    fresh = _seeded(RecordsRngAtStart)
    torch.manual_seed(1234)  # another rank's (or another job's) global RNG
    _fit(tmp_path / "fresh", fresh, max_steps=1)
    resumed = _seeded(RecordsRngAtStart)
    torch.manual_seed(1234)
    _fit(tmp_path / "run", resumed, max_steps=5, ckpt=str(last))
    assert torch.equal(resumed.rng_at_start, fresh.rng_at_start)


def test_save_only_signal_does_not_requeue(tmp_path, monkeypatch):
    monkeypatch.setattr(
        preemption, "requeue_slurm_job", lambda job: pytest.fail("must not requeue on a save-only signal")
    )
    monkeypatch.setenv("SLURM_JOB_ID", "5")

    class TermAtStep1(NoisyRegression):
        def training_step(self, batch, batch_idx):
            if self.global_step == 1:
                os.kill(os.getpid(), signal.SIGTERM)
            return super().training_step(batch, batch_idx)

    with pytest.raises(Preempted, match="not requeued"):  # SIGTERM configured as save-only
        _fit(tmp_path, _seeded(TermAtStep1), max_steps=8, requeue_signals=["SIGUSR1"], save_signals=["SIGTERM"])
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file()


def test_job_id_to_requeue():
    assert slurm_job_to_requeue({"SLURM_JOB_ID": "12"}) == "12"
    assert (
        slurm_job_to_requeue({"SLURM_JOB_ID": "12", "SLURM_ARRAY_JOB_ID": "10", "SLURM_ARRAY_TASK_ID": "2"})
        == "10_2"
    )
    assert slurm_job_to_requeue({}) is None
    with pytest.raises(ValueError, match="N or N_M"):
        slurm_job_to_requeue({"SLURM_JOB_ID": "12; rm -rf /"})


def test_unknown_signal_name_is_a_clear_error():
    with pytest.raises(ValueError, match="SIGUSR1"):
        PreemptionCheckpoint(requeue_signals=["SIGFOO"])
