"""performance: block: SDPA backend restriction during fit, activation checkpointing switches, channels_last,
compile targets, config validation."""

from __future__ import annotations

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import SDPBackend
from torch.utils.data import DataLoader, TensorDataset

from src.trainers.performance import (
    PerformanceSetup,
    build_performance_callback,
    compile_targets,
    sdpa_backend_context,
    sdpa_backends,
    set_activation_checkpointing,
)


def sdp_flags() -> dict[str, bool]:
    b = torch.backends.cuda
    return {
        "flash": b.flash_sdp_enabled(),
        "efficient": b.mem_efficient_sdp_enabled(),
        "math": b.math_sdp_enabled(),
    }


def test_backend_names_and_errors():
    assert sdpa_backends("auto") is None and sdpa_backends(None) is None
    assert sdpa_backends("flash") == [SDPBackend.FLASH_ATTENTION]
    assert sdpa_backends(["flash", "math"]) == [SDPBackend.FLASH_ATTENTION, SDPBackend.MATH]
    with pytest.raises(ValueError, match="performance.sdpa_backend.*xformers"):
        sdpa_backends("xformers")


def test_context_restricts_kernels_and_restores():
    before = sdp_flags()
    q = torch.randn(1, 2, 8, 16)
    with sdpa_backend_context("math"):
        assert sdp_flags() == {"flash": False, "efficient": False, "math": True}
        F.scaled_dot_product_attention(q, q, q)
    with sdpa_backend_context("efficient"), pytest.raises(RuntimeError):
        F.scaled_dot_product_attention(
            q, q, q
        )  # no CPU kernel for memory-efficient attention: restriction is real
    assert sdp_flags() == before


class Attn(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(16, 16)
        self.flags: list[dict[str, bool]] = []

    def training_step(self, batch, batch_idx):
        (x,) = batch
        q = self.proj(x).view(x.shape[0], 2, 4, 2)
        self.flags.append(sdp_flags())
        return F.scaled_dot_product_attention(q, q, q).pow(2).mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_callback_applies_backend_for_the_fit_only(tmp_path):
    before = sdp_flags()
    module = Attn()
    trainer = L.Trainer(
        default_root_dir=tmp_path,
        max_steps=2,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[PerformanceSetup(sdpa_backend="math")],
    )
    trainer.fit(module, DataLoader(TensorDataset(torch.randn(8, 16)), batch_size=4))
    assert module.flags == [{"flash": False, "efficient": False, "math": True}] * 2
    assert sdp_flags() == before


def test_builder_returns_none_at_defaults():
    defaults = {
        "sdpa_backend": "auto",
        "activation_checkpointing": None,
        "channels_last": False,
        "compile": False,
        "compile_mode": "default",
    }
    assert build_performance_callback(defaults) is None
    assert isinstance(build_performance_callback({**defaults, "sdpa_backend": "flash"}), PerformanceSetup)
    with pytest.raises(ValueError, match="sdpa_backend"):
        build_performance_callback({**defaults, "sdpa_backend": "fast"})


TINY_UNET = dict(
    sample_size=8,
    in_channels=4,
    out_channels=4,
    block_out_channels=[32, 64],
    cross_attention_dim=16,
    layers_per_block=1,
    attention_head_dim=2,
    norm_num_groups=16,
)


def tiny_aa_net():
    from src.models.animate_anyone import AnimateAnyoneNet, build_tiny_unet
    from src.models.pose_guider import PoseGuider

    guider = PoseGuider(in_channels=3, injection="conv_in", block_channels=[8, 16], out_channels=32)
    return AnimateAnyoneNet(build_tiny_unet(**TINY_UNET), build_tiny_unet(**TINY_UNET), guider)


class Holder(nn.Module):
    """A module with a trainable net and a frozen diffusers model (like a VAE) beside it."""

    def __init__(self) -> None:
        super().__init__()
        from src.models.animate_anyone import build_tiny_unet

        self.net = tiny_aa_net()
        self.frozen = build_tiny_unet(**TINY_UNET).requires_grad_(False)


def test_activation_checkpointing_switches_trainable_unets_only():
    holder = Holder()
    changed = set_activation_checkpointing(holder, True)
    assert changed == ["net"]
    assert (
        holder.net.reference_unet.is_gradient_checkpointing
        and holder.net.denoising_unet.is_gradient_checkpointing
    )
    assert not holder.frozen.is_gradient_checkpointing
    set_activation_checkpointing(holder, False)
    assert not holder.net.reference_unet.is_gradient_checkpointing
    assert not holder.net.denoising_unet.is_gradient_checkpointing


def test_activation_checkpointing_sets_dynamicrafter_block_flags():
    from src.models.dynamicrafter.blocks import ResBlock

    class Blocks(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = ResBlock(32, emb_channels=16, dropout=0.0)
            self.b = nn.Sequential(ResBlock(32, emb_channels=16, dropout=0.0))

    m = Blocks()
    assert set(set_activation_checkpointing(m, True)) == {"a", "b.0"}
    assert m.a.use_checkpoint and m.b[0].use_checkpoint
    set_activation_checkpointing(m, False)
    assert not m.a.use_checkpoint


def test_channels_last_and_compile_targets():
    holder = Holder()
    assert [n for n, _ in compile_targets(holder)] == ["net.reference_unet", "net.denoising_unet"]
    holder.to(memory_format=torch.channels_last)
    assert holder.net.denoising_unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
