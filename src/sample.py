"""Sampling entry point: `python -m src.sample experiment=<name> sample.<inputs>=... sample.out=DIR`.

Builds the experiment's model (its stage settings merged, as training does), loads trained weights from
`sample.weights` (a net.safetensors, an export folder or a run folder) and runs the experiment's pipeline, chosen
by the model's `_target_` (PIPELINES):
- Animate Anyone (src.inference.animate_anyone): `sample.reference=IMG sample.pose_video=POSE.mp4`;
- DynamiCrafter (src.inference.dynamicrafter): `sample.image=IMG sample.prompt=...` or `sample.images=DIR`;
- Rerender-A-Video (src.inference.rerender): `sample.video=IN.mp4 sample.prompt=...` (key frames translated with
  SD + ControlNet, then propagated), or `sample.keyframes=DIR` (your own key frames, propagated).
Each writes its videos and a settings file beside them; each declares its required inputs (src.inference.pipelines).
"""

from __future__ import annotations

import importlib
import logging

import hydra
from omegaconf import DictConfig

from src.config import register_resolvers
from src.config_checks import check_config_or_exit
from src.inference.pipelines import PIPELINES

register_resolvers()
log = logging.getLogger(__name__)


def run(cfg: DictConfig) -> list[dict]:
    """Runs the pipeline of the experiment's model; returns the records written to samples.json."""
    target = cfg.model.get("_target_")
    if target not in PIPELINES:
        raise ValueError(
            f"python -m src.sample has no pipeline for model._target_={target!r}; known: {sorted(PIPELINES)}. "
            "Pick an experiment of one of them (experiment=animate_anyone, experiment=dynamicrafter_512, experiment=rerender, ...)."
        )
    return importlib.import_module(PIPELINES[target].module).run(cfg)


@hydra.main(version_base="1.3", config_path="../conf", config_name="sample")
def main(cfg: DictConfig) -> None:
    check_config_or_exit(cfg, "sample")  # before anything is built
    for record in run(cfg):
        print(record["video"])


if __name__ == "__main__":
    main()
