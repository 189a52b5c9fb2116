"""The training hot path reads nothing back from the device between logging intervals.

A host read of a device tensor (`.item()`, `.tolist()`, `bool()`, `int()`, `float()`, `.cpu()`, `.numpy()`)
blocks the CPU until the GPU queue drains, so the CPU can no longer run ahead and queue the next step. On CPU
there is no device, so the test counts those calls instead, made from our training code (src/trainers,
src/models) during real training steps through the runner, with every callback on (EMA, speed monitor, progress
lines, NaN guard, preemption, skipped-sample counts) and their intervals longer than the run. Steps other than
the first (FLOP count, EMA start) and the last (end of fit, checkpoint) must make none.
"""

from __future__ import annotations

import sys
from collections import defaultdict
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from src.config import register_resolvers
from src.trainers.animate_anyone import AnimateAnyoneModule
from src.trainers.dynamicrafter import DynamiCrafterModule
from src.trainers.runner import run
from tests.conftest import ROOT
from tests.integration.test_dynamicrafter_demo import TINY as DC_TINY
from tests.integration.test_train_animate_anyone import TINY as AA_TINY

SYSTEMS = {
    "animate_anyone": (AA_TINY, "spatial", AnimateAnyoneModule),
    "dynamicrafter": (DC_TINY, "finetune", DynamiCrafterModule),
}
HOST_READS = ("item", "tolist", "__bool__", "__int__", "__float__", "cpu", "numpy")
OUR_CODE = (str(ROOT / "src" / "trainers"), str(ROOT / "src" / "models"))
STEPS = 5
LONG = 1000  # every interval longer than the run


@pytest.fixture()
def host_reads(monkeypatch):
    """{step: [caller, ...]} of every host read our training code makes; the step is the one being trained."""
    reads: dict[int, list[str]] = defaultdict(list)
    current = {"step": -1}
    for name in HOST_READS:
        original = getattr(torch.Tensor, name)

        def counting(self, *args, _original=original, _name=name, **kwargs):
            caller = sys._getframe(1)
            if caller.f_code.co_filename.startswith(OUR_CODE):
                reads[current["step"]].append(
                    f"{_name} in {Path(caller.f_code.co_filename).name}:{caller.f_lineno}"
                )
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, counting)
    for _, _, module_class in SYSTEMS.values():
        step = module_class.training_step

        def labelled(self, batch, batch_idx, _step=step):
            current["step"] = self.trainer.global_step
            return _step(self, batch, batch_idx)

        monkeypatch.setattr(module_class, "training_step", labelled)
    return reads


@pytest.mark.parametrize("system", list(SYSTEMS))
def test_training_steps_make_no_host_reads(system, host_reads, tmp_path, demo_cache):
    overrides, stage, _ = SYSTEMS[system]
    register_resolvers()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(
            "train",
            overrides=[
                *overrides,
                f"paths.cache={demo_cache}",
                f"stage={stage}",
                "evaluation.heldout=false",
                "data.val.num_videos=0",
                f"stages.{stage}.trainer.max_steps={STEPS}",
                f"trainer.log_every_n_steps={LONG}",
                "trainer.enable_progress_bar=true",
                "callbacks.progress.style=lines",
                f"callbacks.progress.every_n_steps={LONG}",
                f"callbacks.speed.every_n_steps={LONG}",
                f"callbacks.nonfinite.check_every_n_steps={LONG}",
                f"callbacks.checkpoint.every_n_train_steps={LONG}",
                f"callbacks.skipped_samples.every_n_steps={LONG}",
                "callbacks.ema.enabled=true",
            ],
        )
    run(cfg, tmp_path / "run")
    assert max(host_reads) == STEPS - 1  # the hooks ran and were labelled
    per_step = {step: host_reads.get(step, []) for step in range(1, STEPS - 1)}
    assert all(not reads for reads in per_step.values()), per_step
