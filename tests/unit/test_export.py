"""src.export on Lightning checkpoints: per-module files, frozen keys left out, --base, --ema, strict load-back."""

from __future__ import annotations

import json

import lightning as L
import pytest
import torch
from safetensors.torch import load_file
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from src.export import checkpoint_exists, checkpoint_step, export_checkpoint, load_exported, main
from src.models.weights_io import load_net_weights, save_net_weights
from src.trainers.ema import EMACallback


class Unet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Linear(4, 4)
        self.down = nn.ModuleDict({"motion_modules": nn.ModuleList([nn.Linear(4, 4)])})

    def forward(self, x):
        return self.down["motion_modules"][0](self.conv(x))


class Stage2Like(L.LightningModule):
    """Only the motion modules train; the rest of `net` and the encoder are frozen and left out of checkpoints."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.encoder = nn.Linear(4, 4)
        self.net = nn.ModuleDict({"denoising_unet": Unet(), "pose_guider": nn.Linear(4, 4)})
        self.requires_grad_(False)
        self.net["denoising_unet"].down.requires_grad_(True)

    def training_step(self, batch, batch_idx):
        (x,) = batch
        return self.net["denoising_unet"](self.encoder(x)).pow(2).mean()

    def configure_optimizers(self):
        return torch.optim.SGD([p for p in self.parameters() if p.requires_grad], lr=0.5)

    def on_save_checkpoint(self, checkpoint):
        frozen = {n for n, p in self.named_parameters() if not p.requires_grad}
        for key in frozen:
            del checkpoint["state_dict"][key]
        checkpoint["frozen_keys_excluded"] = sorted(frozen)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("export")
    module, ema = Stage2Like(), EMACallback(decay=0.5, warmup_power=None)
    trainer = L.Trainer(
        default_root_dir=tmp,
        max_steps=3,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[ema],
    )
    trainer.fit(module, DataLoader(TensorDataset(torch.randn(12, 4)), batch_size=4))
    trainer.save_checkpoint(tmp / "last.ckpt")
    return tmp / "last.ckpt", module, ema


def test_partial_checkpoint_gives_motion_module_file_and_loads_back(trained, tmp_path):
    ckpt, module, _ = trained
    index = export_checkpoint(ckpt, tmp_path)
    assert not index["net_complete"] and "net" not in index["files"]
    assert not (tmp_path / "net.safetensors").exists()
    assert index["files"]["motion_modules"]["prefix"] == "denoising_unet."
    assert set(load_file(str(tmp_path / "motion_modules.safetensors"))) == {
        "down.motion_modules.0.weight",
        "down.motion_modules.0.bias",
    }
    assert "pose_guider.weight" in index["frozen_keys_excluded"]
    fresh = Stage2Like().net  # frozen parts as built, motion modules from the export
    load_exported(fresh, tmp_path)
    for k, v in module.net.state_dict().items():
        torch.testing.assert_close(fresh.state_dict()[k], v)


def test_base_fills_frozen_weights_into_a_strict_net_file(trained, tmp_path):
    ckpt, module, _ = trained
    base = save_net_weights(Stage2Like().net, tmp_path / "base" / "net.safetensors")
    main([str(ckpt), str(tmp_path / "out"), "--base", str(base), "--dtype", "bf16"])
    index = json.loads((tmp_path / "out" / "index.json").read_text())
    assert index["net_complete"] and index["dtype"] == "bf16" and index["global_step"] == 3
    net = nn.ModuleDict({"denoising_unet": Unet(), "pose_guider": nn.Linear(4, 4)})
    load_net_weights(net, tmp_path / "out" / "net.safetensors")  # strict
    w = load_file(str(tmp_path / "out" / "net.safetensors"))["denoising_unet.down.motion_modules.0.weight"]
    assert w.dtype == torch.bfloat16
    torch.testing.assert_close(
        w.float(), module.net["denoising_unet"].down.motion_modules[0].weight, atol=1e-2, rtol=1e-2
    )


def test_ema_export_holds_the_average(trained, tmp_path):
    ckpt, module, ema = trained
    export_checkpoint(ckpt, tmp_path, ema=True)
    w = load_file(str(tmp_path / "motion_modules.safetensors"))["down.motion_modules.0.weight"]
    torch.testing.assert_close(w, ema.shadow["net.denoising_unet.down.motion_modules.0.weight"])
    assert not torch.allclose(w, module.net["denoising_unet"].down.motion_modules[0].weight)


def test_missing_ema_and_bad_paths_are_clear(trained, tmp_path):
    ckpt, _, _ = trained
    plain = torch.load(ckpt, weights_only=False)
    plain["callbacks"] = {}
    torch.save(plain, tmp_path / "plain.ckpt")
    with pytest.raises(ValueError, match="callbacks.ema.enabled"):
        export_checkpoint(tmp_path / "plain.ckpt", tmp_path / "o", ema=True)
    with pytest.raises(FileNotFoundError, match="last.ckpt"):
        export_checkpoint(tmp_path / "nope", tmp_path / "o")


def test_load_back_refuses_an_export_of_another_model(trained, tmp_path):
    ckpt, _, _ = trained
    export_checkpoint(ckpt, tmp_path)
    other = nn.ModuleDict(
        {"denoising_unet": nn.ModuleDict({"down": nn.Linear(4, 4)}), "pose_guider": nn.Linear(4, 4)}
    )
    with pytest.raises(Exception, match="down"):
        load_exported(other, tmp_path)


def test_checkpoint_step_and_exists(trained, tmp_path):
    ckpt, _, _ = trained
    assert checkpoint_exists(ckpt) and checkpoint_step(ckpt) == 3
    assert not checkpoint_exists(tmp_path / "missing.ckpt") and not checkpoint_exists(tmp_path)
