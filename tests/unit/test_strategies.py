"""strategy= config group: every option composes and builds; DeepSpeed JSONs are valid; clear refusals."""

from __future__ import annotations

import json

import lightning as L
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from lightning.pytorch.strategies import DDPStrategy, DeepSpeedStrategy, FSDPStrategy
from torch import nn

from src.config import register_resolvers
from src.trainers.strategies import (
    CONF_DIR,
    FrozenAwareDeepSpeedStrategy,
    deepspeed_strategy,
    load_deepspeed_config,
    load_with_frozen_excluded,
)

register_resolvers()


def compose_train(*overrides: str):
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR)):
        return compose("train", overrides=["experiment=animate_anyone_demo", *overrides])


def test_auto_sets_nothing_so_command_line_strategies_still_work():
    assert "strategy" not in compose_train().trainer
    assert compose_train("+trainer.strategy=ddp").trainer.strategy == "ddp"


def test_gpu_trainer_defaults_to_zero2_bf16_and_strategy_choice_wins():
    cfg = compose_train("trainer=gpu")
    assert cfg.trainer.precision == "bf16-mixed"
    assert cfg.trainer.strategy._target_.endswith("deepspeed_strategy") and cfg.trainer.strategy.stage == 2
    assert cfg.trainer.strategy.exclude_frozen_parameters is True
    assert compose_train("trainer=gpu", "strategy=ddp").trainer.strategy._target_.endswith("ddp_strategy")


def test_ddp_builds_and_constructs_a_cpu_trainer():
    strategy = instantiate(compose_train("strategy=ddp").trainer.strategy)
    assert isinstance(strategy, DDPStrategy)
    trainer = L.Trainer(
        accelerator="cpu", devices=1, strategy=strategy, logger=False, enable_checkpointing=False
    )
    assert trainer.strategy is strategy


def test_fsdp_builds_for_gpu_and_is_refused_on_cpu():
    strategy = instantiate(compose_train("strategy=fsdp", "trainer.accelerator=gpu").trainer.strategy)
    assert isinstance(strategy, FSDPStrategy)
    with pytest.raises(Exception) as err:
        instantiate(compose_train("strategy=fsdp").trainer.strategy)
    assert "strategy=fsdp needs CUDA GPUs" in str(err.value) + str(err.value.__cause__)


@pytest.mark.parametrize("stage", [2, 3])
def test_deepspeed_on_cpu_is_refused_with_the_fix(stage):
    cfg = compose_train(f"strategy=deepspeed_stage_{stage}")
    with pytest.raises(Exception) as err:
        instantiate(cfg.trainer.strategy)
    message = str(err.value) + str(err.value.__cause__)
    assert (
        f"strategy=deepspeed_stage_{stage} needs CUDA GPUs" in message
        and "use strategy=ddp" in message.lower()
    )


@pytest.mark.parametrize("stage", [2, 3])
def test_deepspeed_builds_from_its_json_for_a_gpu_trainer(stage):
    cfg = compose_train(f"strategy=deepspeed_stage_{stage}", "trainer.accelerator=gpu", "data.batch_size=3")
    strategy = instantiate(cfg.trainer.strategy)
    assert isinstance(strategy, FrozenAwareDeepSpeedStrategy) and isinstance(strategy, DeepSpeedStrategy)
    assert strategy.config["zero_optimization"]["stage"] == stage
    assert strategy.config["train_micro_batch_size_per_gpu"] == 3
    assert strategy.exclude_frozen_parameters is (stage == 2)
    assert strategy.zero_stage_3 == (stage == 3)
    on_disk = json.loads((CONF_DIR / "deepspeed" / f"zero{stage}.json").read_text())
    assert "train_micro_batch_size_per_gpu" not in on_disk  # the factory did not edit the user's file


@pytest.mark.parametrize("stage", [2, 3])
def test_shipped_json_is_valid(stage):
    config = load_deepspeed_config(f"deepspeed/zero{stage}.json", stage)
    assert config["zero_optimization"]["stage"] == stage


def test_bad_json_configs_say_what_to_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match="zero9.json"):
        load_deepspeed_config("deepspeed/zero9.json", 2)
    wrong_stage = tmp_path / "z.json"
    wrong_stage.write_text(json.dumps({"zero_optimization": {"stage": 3}}))
    with pytest.raises(ValueError, match="stage=3.*deepspeed_stage_2"):
        load_deepspeed_config(wrong_stage, 2)
    accumulation = tmp_path / "a.json"
    accumulation.write_text(json.dumps({"zero_optimization": {"stage": 2}, "gradient_accumulation_steps": 4}))
    with pytest.raises(ValueError, match="gradient_accumulation_steps"):
        deepspeed_strategy(accumulation, 2, accelerator="gpu")
    broken = tmp_path / "b.json"
    broken.write_text("{")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_deepspeed_config(broken, 2)


class Net(nn.Module):
    def __init__(self, seed: int) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.encoder = nn.Linear(3, 3).requires_grad_(False)
        torch.manual_seed(seed)
        self.head = nn.Linear(3, 2)


def test_frozen_aware_load_restores_trainable_and_keeps_frozen():
    saved = Net(seed=1)
    state = {k: v for k, v in saved.state_dict().items() if not k.startswith("encoder.")}
    target = Net(seed=2)
    load_with_frozen_excluded(state, target)
    torch.testing.assert_close(target.head.weight, saved.head.weight)
    torch.testing.assert_close(target.encoder.weight, saved.encoder.weight)


def test_frozen_aware_load_refuses_missing_trainable_or_unknown_keys():
    state = {"head.weight": torch.zeros(2, 3)}
    with pytest.raises(RuntimeError, match="missing trainable keys.*head.bias"):
        load_with_frozen_excluded(state, Net(seed=2))
    state = {"head.weight": torch.zeros(2, 3), "head.bias": torch.zeros(2), "extra": torch.zeros(1)}
    with pytest.raises(RuntimeError, match="unexpected keys.*extra"):
        load_with_frozen_excluded(state, Net(seed=2))
