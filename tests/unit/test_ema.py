"""EMA callback: math against a hand loop, fp32 shadow outside the module, save/resume through a tiny fit, swap."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from src.trainers.ema import EMACallback, build_ema_callback, ema_decay


class Tiny(L.LightningModule):
    """A linear model with a frozen "encoder", trained by SGD on a fixed regression batch."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.encoder = nn.Linear(4, 4).requires_grad_(False)
        self.head = nn.Linear(4, 1)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.mse_loss(self.head(self.encoder(x)), y)

    def validation_step(self, batch, batch_idx):
        self.log("val/w", self.head.weight.sum())
        self.seen_weight = self.head.weight.detach().clone()

    def configure_optimizers(self):
        return torch.optim.SGD([p for p in self.parameters() if p.requires_grad], lr=0.1)


def loader() -> DataLoader:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(16, 4, generator=g)
    return DataLoader(TensorDataset(x, x.sum(1, keepdim=True)), batch_size=4)


def trainer(tmp_path, steps: int, callbacks, **kw) -> L.Trainer:
    return L.Trainer(
        default_root_dir=tmp_path,
        max_steps=steps,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        callbacks=callbacks,
        num_sanity_val_steps=0,
        **kw,
    )


def hand_ema(
    weights: list[dict[str, torch.Tensor]], decay: float, power: float | None
) -> dict[str, torch.Tensor]:
    """Independent reference: start from the initial weights, then one update per optimizer step."""
    shadow = {k: v.double().clone() for k, v in weights[0].items()}
    for n, w in enumerate(weights[1:]):
        d = decay if power is None else min(decay, 1 - (1 + n) ** -power)
        shadow = {k: d * shadow[k] + (1 - d) * w[k].double() for k in shadow}
    return shadow


class Recorder(L.Callback):
    def __init__(self) -> None:
        self.weights: list[dict[str, torch.Tensor]] = []

    def on_train_start(self, trainer, pl_module):
        self.weights.append({k: v.detach().clone() for k, v in pl_module.head.state_dict().items()})

    def on_train_batch_end(self, trainer, pl_module, *args):
        self.weights.append({k: v.detach().clone() for k, v in pl_module.head.state_dict().items()})


def test_decay_warmup_values():
    assert ema_decay(0, 0.999, 2 / 3) == 0.0
    assert ema_decay(7, 0.999, 1.0) == pytest.approx(1 - 1 / 8)
    assert ema_decay(10**9, 0.999, 2 / 3) == 0.999
    assert ema_decay(3, 0.9, None) == 0.9


@pytest.mark.parametrize("power", [None, 0.75])
def test_matches_hand_loop_and_only_trainable_params(tmp_path, power):
    ema, rec = EMACallback(decay=0.8, warmup_power=power), Recorder()
    module = Tiny()
    trainer(tmp_path, 6, [rec, ema]).fit(module, loader())
    assert set(ema.shadow) == {"head.weight", "head.bias"}  # frozen encoder not copied
    assert all(t.dtype == torch.float32 for t in ema.shadow.values())
    assert not any("ema" in k or "shadow" in k for k in module.state_dict())  # not module buffers
    expected = hand_ema(rec.weights, 0.8, power)
    assert ema.num_updates == 6
    for k, v in expected.items():
        torch.testing.assert_close(ema.shadow[f"head.{k}"].double(), v, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(ema.shadow["head.weight"], module.head.weight)


def test_updates_once_per_optimizer_step_with_accumulation(tmp_path):
    ema = EMACallback(decay=0.5, warmup_power=None)
    trainer(tmp_path, 3, [ema], accumulate_grad_batches=2).fit(Tiny(), loader())
    assert ema.num_updates == 3


def test_saved_and_resumed_continues_the_average(tmp_path):
    """EMA after 2 steps + save + resume for 2 more = the hand loop over the whole 4-step weight trajectory."""
    first, rec1 = EMACallback(decay=0.7, warmup_power=0.5), Recorder()
    t = trainer(tmp_path, 2, [rec1, first])
    t.fit(Tiny(), loader())
    ckpt = tmp_path / "b.ckpt"
    t.save_checkpoint(ckpt)
    state = torch.load(ckpt, weights_only=False)["callbacks"]
    (saved,) = [v for k, v in state.items() if "EMACallback" in k]
    assert saved["num_updates"] == 2 and set(saved["shadow"]) == {"head.weight", "head.bias"}

    resumed, rec2 = EMACallback(decay=0.7, warmup_power=0.5), Recorder()
    trainer(tmp_path, 4, [rec2, resumed]).fit(Tiny(), loader(), ckpt_path=str(ckpt))
    assert resumed.num_updates == 4
    for k, v in rec2.weights[0].items():  # training restarted from the saved weights
        torch.testing.assert_close(v, rec1.weights[-1][k])
    expected = hand_ema(rec1.weights + rec2.weights[1:], 0.7, 0.5)
    for k, v in expected.items():
        torch.testing.assert_close(resumed.shadow[f"head.{k}"].double(), v, rtol=1e-5, atol=1e-6)


def test_validation_sees_ema_and_training_weights_come_back(tmp_path):
    ema = EMACallback(decay=0.9, warmup_power=None, validate_with_ema=True)
    module = Tiny()
    trainer(tmp_path, 3, [ema], val_check_interval=3, limit_val_batches=1).fit(module, loader(), loader())
    torch.testing.assert_close(module.seen_weight, ema.shadow["head.weight"])
    assert not torch.allclose(module.head.weight, ema.shadow["head.weight"])  # raw weights restored
    with ema.averaged(module):
        torch.testing.assert_close(module.head.weight, ema.shadow["head.weight"])
    assert not torch.allclose(module.head.weight, ema.shadow["head.weight"])


def test_final_weights_ema_leaves_average_in_model(tmp_path):
    ema = EMACallback(decay=0.9, warmup_power=None, final_weights="ema")
    module = Tiny()
    trainer(tmp_path, 3, [ema]).fit(module, loader())
    torch.testing.assert_close(module.head.weight, ema.shadow["head.weight"])


def test_config_builder_and_bad_values():
    assert build_ema_callback({"enabled": False, "decay": 0.9}) is None
    assert isinstance(build_ema_callback({"enabled": True, "decay": 0.9}), EMACallback)
    with pytest.raises(ValueError, match="callbacks.ema.decay"):
        EMACallback(decay=1.0)
    with pytest.raises(ValueError, match="final_weights"):
        EMACallback(final_weights="best")


def test_zero3_is_refused(monkeypatch):
    from lightning.pytorch.strategies import DeepSpeedStrategy

    strategy = DeepSpeedStrategy.__new__(DeepSpeedStrategy)
    strategy.config = {"zero_optimization": {"stage": 3}}
    fake = type("T", (), {"strategy": strategy})()
    with pytest.raises(RuntimeError, match="ZeRO-3"):
        EMACallback.check_strategy(fake)


def test_fused_update_over_chunks_equals_per_parameter_lerp(monkeypatch):
    """300 trainable tensors (two chunks) and one bf16 weight: fused chunks give the per-parameter average."""
    import src.trainers.ema as ema_module

    torch.manual_seed(0)
    net = nn.ModuleList([nn.Linear(3, 2) for _ in range(150)])
    net[0].to(torch.bfloat16)
    ema = EMACallback(decay=0.9, warmup_power=None)
    ema.start(net, step=0)
    start = {n: t.clone() for n, t in ema.shadow.items()}
    assert len(start) == 300 and all(t.dtype == torch.float32 for t in start.values())
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p))
    calls = []
    fused = torch._foreach_lerp_
    monkeypatch.setattr(torch, "_foreach_lerp_", lambda a, b, w: calls.append(len(a)) or fused(a, b, w))
    ema.update(net)
    assert calls == [ema_module.FOREACH_CHUNK, 300 - ema_module.FOREACH_CHUNK]  # not one call per parameter
    for name, p in net.named_parameters():
        expected = 0.9 * start[name].double() + 0.1 * p.detach().double()
        torch.testing.assert_close(ema.shadow[name].double(), expected, rtol=1e-6, atol=1e-6)
        assert ema.shadow[name].dtype == torch.float32
