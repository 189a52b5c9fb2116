"""The runner serves any system its config names: DynamiCrafter's data, demo and evaluation with a stand-in module.

The stand-in follows the DynamiCrafter module interface (net, training_step on caption-video
batches, validation videos, `sample(image, captions, num_frames, ...)`) but is a 3-parameter model, so this test
checks the runner's wiring (config-chosen loaders, demo generator, evaluation, summary) in seconds.
"""

from __future__ import annotations

import json

import lightning as L
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf, open_dict

from src.config import register_resolvers
from src.models.weights_io import load_net_weights
from tests.conftest import ROOT


class StandInNet(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.colour = torch.nn.Parameter(torch.zeros(1, 3, 1, 1, 1))


class StandInModule(L.LightningModule):
    """Learns the mean colour of the clips; `sample` paints every frame with it."""

    def __init__(self, stage: str, init_weights: str | None = None, seed: int = 0) -> None:
        super().__init__()
        self.net = StandInNet()
        self.batches: list[dict] = []

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        self.batches.append({k: batch[k] for k in ("caption", "frame_stride", "fps", "skipped")})
        loss = (batch["video"] - self.net.colour).pow(2).mean()
        self.log("train/loss", loss)
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        video = batch["video"]
        self.last_validation_videos = {"generated": self.sample(video[:, :, 0], batch["caption"], video.shape[2])}

    @torch.no_grad()
    def sample(self, image, captions, num_frames, frame_stride=None, fps=None, generator=None, **overrides):
        assert image.ndim == 4 and len(captions) == image.shape[0]
        b, c, h, w = image.shape
        return self.net.colour.expand(b, c, num_frames, h, w).clone()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.5)


@pytest.fixture
def cfg(tmp_path):
    register_resolvers()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(
            "train",
            overrides=[
                "data=dynamicrafter_demo",
                "evaluation=dynamicrafter_heldout",
                "trainer=cpu",
                "logger=none",
                f"paths.cache={tmp_path / 'cache'}",
                "data.demo.num_train_videos=4",
                "data.demo.num_heldout_videos=2",
                "data.demo.num_frames=16",
                "data.batch_size=2",
                "data.val.num_videos=1",
                "evaluation.num_videos=2",
                "evaluation.num_frames=8",
                "evaluation.stride=2",
                "trainer.enable_progress_bar=false",
                "trainer.val_check_interval=4",
            ],
        )
    with open_dict(cfg):
        cfg.model = OmegaConf.create({"_target_": f"{__name__}.StandInModule"})
        cfg.stages = OmegaConf.create({"finetune": {"trainer": {"max_steps": 4}}})
        cfg.callbacks.pop("preemption", None)
    return cfg


def test_runner_trains_and_evaluates_a_caption_video_system(cfg, tmp_path):
    from src.trainers.runner import run

    run_dir = tmp_path / "run"
    summary = run(cfg, run_dir)
    assert summary["stages_run"] == ["finetune"] and summary["steps"] == {"finetune": 4}
    scores = summary["metrics"]["heldout"]
    assert set(scores) == {"trained", "untrained", "repeat_condition"}
    # the trained weights (the clips' mean colour, away from the zero initialisation) were the ones evaluated
    trained = StandInNet()
    load_net_weights(trained, summary["weights"]["finetune"])
    assert trained.colour.abs().min() > 0.01
    assert scores["trained"]["psnr"] != scores["untrained"]["psnr"]
    assert len(summary["heldout"]["videos"]) == 2 and len(summary["heldout"]["captions"]) == 2
    assert any("samples" in p for p in summary["samples"])  # the validation writer ran on caption batches
    on_disk = json.loads((run_dir / "summary.json").read_text())
    assert on_disk["metrics"] == json.loads(json.dumps(summary["metrics"]))


class NaNAtStep1(StandInModule):
    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss = super().training_step(batch, batch_idx)
        return loss * float("nan") if self.global_step == 1 else loss


def test_an_injected_nan_is_skipped_and_counted_in_the_summary(cfg, tmp_path):
    from src.trainers.runner import run

    with open_dict(cfg):
        cfg.model = OmegaConf.create({"_target_": f"{__name__}.NaNAtStep1"})
        cfg.evaluation.heldout = False
        cfg.callbacks.nonfinite.check_every_n_steps = 2
    summary = run(cfg, tmp_path / "run")
    assert summary["steps"] == {"finetune": 4}
    assert summary["stages"]["finetune"]["nonfinite_steps"] == 1
    trained = StandInNet()
    load_net_weights(trained, summary["weights"]["finetune"])
    assert torch.isfinite(trained.colour).all() and trained.colour.abs().min() > 0.01
