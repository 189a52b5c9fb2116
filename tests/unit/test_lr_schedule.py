"""The learning-rate schedule shared by both diffusion modules: warm-up, then constant/cosine/linear decay."""

from __future__ import annotations

import math

import pytest
import torch

from src.trainers.lr_schedule import LRSchedule, build_lr_scheduler, lr_multiplier


def test_warmup_then_constant_is_the_papers_default():
    assert [lr_multiplier(s, 4, "constant", 100, 0.0) for s in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]


@pytest.mark.parametrize("decay", ["cosine", "linear"])
def test_decay_runs_from_the_base_rate_down_to_the_floor(decay):
    values = [lr_multiplier(s, 2, decay, 12, 0.1) for s in range(2, 13)]
    assert values[0] == pytest.approx(1.0)
    assert all(a > b for a, b in zip(values, values[1:]))
    assert values[-1] == pytest.approx(0.1)
    assert lr_multiplier(50, 2, decay, 12, 0.1) == pytest.approx(0.1)  # past the end: the floor
    midpoint = lr_multiplier(7, 2, decay, 12, 0.0)
    assert midpoint == pytest.approx(0.5)


def test_scheduler_steps_the_optimizer_rate():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=2.0)
    config = build_lr_scheduler(opt, LRSchedule(0, "cosine", 0.0), lambda: 4)
    rates = []
    for _ in range(5):
        rates.append(opt.param_groups[0]["lr"])
        opt.step()
        config["scheduler"].step()
    assert rates == pytest.approx([2.0, 2.0 * (1 + math.cos(math.pi / 4)) / 2, 1.0, 2.0 * (1 - math.cos(math.pi / 4)) / 2, 0.0])


def test_no_scheduler_when_the_rate_is_constant_from_step_zero():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    assert build_lr_scheduler(opt, LRSchedule(0, "constant", 0.0), lambda: float("inf")) is None


@pytest.mark.parametrize(
    ("decay", "ratio", "total", "message"),
    [
        ("exponential", 0.0, 10, "not one of"),
        ("cosine", 1.5, 10, "min_lr_ratio"),
        ("cosine", 0.0, float("inf"), "trainer.max_steps"),
    ],
)
def test_bad_schedule_is_a_clear_error(decay, ratio, total, message):
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    with pytest.raises(ValueError, match=message):
        build_lr_scheduler(opt, LRSchedule(0, decay, ratio), lambda: total)
