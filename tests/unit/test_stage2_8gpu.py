"""Animate Anyone's stage 2 on an 8-GPU node (experiment=animate_anyone_8gpu): the config composes, the batch
arithmetic works on 8 GPUs where the paper's batch of 4 cannot, and the scaled recipe keeps the paper's clips seen
and learning rate per clip (the linear scaling rule); stage 1 stays the paper's."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir

from src.config import register_resolvers
from src.trainers.runner import accumulation_steps, stage_config
from tests.conftest import ROOT


def stages(experiment: str) -> dict:
    register_resolvers()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=[f"experiment={experiment}"])
    return {name: stage_config(cfg, name) for name in ("spatial", "temporal")}


def test_stage2_scaled_for_eight_gpus():
    paper, scaled = stages("animate_anyone"), stages("animate_anyone_8gpu")
    p, s = paper["temporal"], scaled["temporal"]
    with pytest.raises(ValueError, match="not a multiple.*experiment=animate_anyone_8gpu"):
        accumulation_steps(p.global_batch_size, p.data.batch_size, 8)  # the paper's 4 clips over 8 GPUs
    assert accumulation_steps(s.global_batch_size, s.data.batch_size, 8) == 1  # one clip per GPU
    assert accumulation_steps(s.global_batch_size, s.data.batch_size, 4) == 2  # and it still runs on 4
    ratio = s.global_batch_size / p.global_batch_size
    assert ratio == 2
    assert s.model.optimizer.lr == pytest.approx(p.model.optimizer.lr * ratio)  # linear scaling rule
    assert s.trainer.max_steps * s.global_batch_size == p.trainer.max_steps * p.global_batch_size  # same clips
    assert (s.data.num_frames, list(s.data.size), s.data.batch_size) == (24, [512, 512], 1)
    # stage 1 is the paper's and already fits 8 GPUs: 64 = 4 per GPU x 8 x 2 accumulation steps
    for key in ("global_batch_size", "data", "trainer", "model"):
        assert scaled["spatial"][key] == paper["spatial"][key], key
    assert accumulation_steps(scaled["spatial"].global_batch_size, scaled["spatial"].data.batch_size, 8) == 2
