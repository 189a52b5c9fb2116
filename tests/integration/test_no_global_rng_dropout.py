"""No network trains with a dropout that draws from torch's global RNG: every dropout with p > 0 is KeyedDropout.

Why: torch's global RNG is shared by a rank's whole batch, so an nn.Dropout mask depends on how samples are
batched and sharded (2 ranks x 1 sample would not train like 1 x 2); KeyedDropout draws per sample from
src.trainers.sample_draws. Built through the runner's builders from the tiny configs of both systems, every stage.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from src.config import register_resolvers
from src.models.keyed_dropout import KeyedDropout
from src.trainers.runner import build_module, stage_config
from tests.integration.test_dynamicrafter_demo import TINY as DC_TINY
from tests.integration.test_train_animate_anyone import TINY as AA_TINY

ROOT = Path(__file__).resolve().parents[2]
SYSTEMS = {"animate_anyone": (AA_TINY, ("spatial", "temporal")), "dynamicrafter": (DC_TINY, ("finetune",))}


@pytest.mark.parametrize("system", list(SYSTEMS))
def test_every_training_dropout_is_keyed_per_sample(system, demo_cache):
    overrides, stages = SYSTEMS[system]
    register_resolvers()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=[*overrides, f"paths.cache={demo_cache}"])
    for stage in stages:
        module = build_module(stage_config(cfg, stage), stage, None)
        global_rng = [
            n
            for n, m in module.named_modules()
            if isinstance(m, torch.nn.modules.dropout._DropoutNd) and m.p > 0
        ]
        assert not global_rng, f"{system}/{stage}: dropout drawing from the global RNG: {global_rng[:5]}"
        keyed = [m for m in module.modules() if isinstance(m, KeyedDropout) and m.p > 0]
        if (
            system == "dynamicrafter"
        ):  # the release's temporal-conv dropout (0.1) is on in the tiny config too
            assert keyed
