"""The Animate Anyone LightningModule: optimizer groups, frozen weights kept out of checkpoints, eval-mode encoders."""

from __future__ import annotations

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from src.config import register_resolvers
from tests.conftest import ROOT

register_resolvers()


def build(stage: str, *overrides: str):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=["experiment=animate_anyone_demo", *overrides])
    torch.manual_seed(0)
    return instantiate(cfg.model, stage=stage)


@pytest.fixture(scope="module")
def spatial():
    return build("spatial", "model.pose_guider_lr_scale=10")


def test_pose_guider_gets_its_learning_rate_multiplier(spatial):
    optimizer = spatial.configure_optimizers()
    optimizer = optimizer["optimizer"] if isinstance(optimizer, dict) else optimizer
    groups = optimizer.param_groups
    assert len(groups) == 2
    assert groups[1]["lr"] == pytest.approx(10 * groups[0]["lr"])
    guider = {id(p) for p in spatial.net.pose_guider.parameters()}
    assert {id(p) for p in groups[1]["params"]} == guider
    n_opt = sum(p.numel() for g in groups for p in g["params"])
    assert n_opt == sum(p.numel() for p in spatial.net.trainable_parameters())


def test_frozen_weights_are_left_out_of_checkpoints_and_restored_on_load(spatial):
    state = {"state_dict": spatial.state_dict()}
    spatial.on_save_checkpoint(state)
    saved = set(state["state_dict"])
    trainable = {id(p) for p in spatial.net.trainable_parameters()}
    for name, param in spatial.named_parameters():
        assert (name in saved) == (id(param) in trainable), name
    assert not any(k.startswith("image_encoder.") for k in saved)
    spatial.on_load_checkpoint(state)
    spatial.load_state_dict(state["state_dict"], strict=True)


def test_temporal_checkpoint_holds_only_motion_modules():
    temporal = build("temporal")
    state = {"state_dict": temporal.state_dict()}
    temporal.on_save_checkpoint(state)
    params = {n for n, _ in temporal.named_parameters()}
    saved_params = set(state["state_dict"]) & params
    assert saved_params and all("motion_modules" in k for k in saved_params)


def test_frozen_encoders_stay_in_eval_mode(spatial):
    spatial.train()
    assert not spatial.image_encoder.training and not spatial.codec.training
    assert spatial.net.training


def test_moore_unconditional_input_is_the_clip_embedding_of_a_zero_image_for_the_whole_batch(spatial):
    """uncond=moore: Moore's training dropout (CLIP of an all-zero CLIP input, whole batch, no reference);
    ours: per sample, zero embedding. The same input feeds the CFG branch in sampling."""
    encoder = spatial.image_encoder
    blank = encoder.embed(torch.zeros(1, 3, encoder.image_size, encoder.image_size))
    assert spatial.uncond == "ours" and not spatial.unconditional_clip(2, blank[:, None]).any()
    spatial.uncond = "moore"
    try:
        uncond = spatial.unconditional_clip(2, blank[:, None])
        torch.testing.assert_close(uncond, blank[:, None].expand(2, 1, -1))
        assert uncond.abs().sum() > 0
        seen = {}

        class Record(torch.nn.Module):
            def forward(self, noisy, timesteps, clip_embeds, reference_latents, pose, use_reference):
                seen.update(clip=clip_embeds.clone(), use_reference=use_reference.clone())
                return torch.zeros_like(noisy, requires_grad=True)

        batch = {"pixel_values": torch.rand(4, 3, 1, 64, 64) * 2 - 1, "pose": torch.rand(4, 3, 1, 64, 64),
                 "reference": torch.rand(4, 3, 64, 64) * 2 - 1}
        spatial.cond_drop_prob = 0.5
        spatial.log = lambda *a, **k: None
        real_net, spatial.net = spatial.net, Record()
        outcomes = set()
        for step in range(12):
            batch["sample_index"] = torch.arange(4) + 4 * step  # the draws are keyed on the samples' indices
            spatial.training_step(batch, 0)
            use = seen["use_reference"]
            assert bool(use.all()) or not bool(use.any())  # one decision for the batch
            if not use.any():
                torch.testing.assert_close(seen["clip"], blank[:, None].expand(4, 1, -1))
            outcomes.add(bool(use.all()))
        assert outcomes == {True, False}
    finally:
        spatial.uncond, spatial.cond_drop_prob = "ours", 0.1
        if "real_net" in locals():
            spatial.net = real_net
        del spatial.log
