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
