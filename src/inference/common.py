"""What every `python -m src.sample` pipeline shares: the experiment's module with trained weights, the device,
input images at the model's size, and the settings file written beside the outputs.

Images are read as RGB, resized on the shorter side and center-cropped as the training data (`c h w` in [-1, 1]).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig

WEIGHTS_FILE = "net.safetensors"


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def load_image(path: Path, size: tuple[int, int], key: str = "sample.image") -> torch.Tensor:
    """RGB image file -> `3 h w` float in [-1, 1] at `size` (shorter-side resize + center crop, as the data)."""
    from PIL import Image

    from src.data.caption_video_dataset import to_model_video

    if not path.is_file():
        raise FileNotFoundError(f"{key}={path}: no such image file.")
    frames = np.asarray(Image.open(path).convert("RGB"))[None]
    return to_model_video(frames, size)[:, 0]


def resolve_weights(path: str | Path, stage: str | None) -> Path:
    """`sample.weights` as a file: a `net.safetensors` itself, an export folder holding one (`python -m src.export`),
    or a training run folder (`<run>/<stage>/final/net.safetensors`)."""
    path = Path(path)
    candidates = [path, path / WEIGHTS_FILE]
    if stage:
        candidates.append(path / stage / "final" / WEIGHTS_FILE)
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        f"sample.weights={path}: no weights there; give a net.safetensors file, a folder written by "
        f"`python -m src.export` (holding {WEIGHTS_FILE}), or a run folder with {stage}/final/{WEIGHTS_FILE} "
        "(written by python -m src.train)."
    )


@dataclass
class Loaded:
    """The module in eval mode on `device`, the stage whose settings were used, and its merged config."""

    module: torch.nn.Module
    stage: str | None
    stage_cfg: DictConfig
    device: torch.device
    weights: str | None


def load_module(cfg: DictConfig, default_stage: str) -> Loaded:
    """The experiment's module built with `sample.stage`'s settings (default: the experiment's last stage) and
    `sample.weights` loaded strictly into its trainable container."""
    from hydra.utils import instantiate

    from src.models.weights_io import load_net_weights
    from src.trainers.runner import stage_config

    stages = list(cfg.stages.keys()) if cfg.stages else []
    stage = cfg.sample.stage or (stages[-1] if stages else None)
    stage_cfg = stage_config(cfg, stage) if stage else cfg
    torch.manual_seed(cfg.seed)
    module = instantiate(stage_cfg.model, stage=stage or default_stage, init_weights=None)
    weights = None
    if cfg.sample.weights:
        weights = str(resolve_weights(cfg.sample.weights, stage))
        load_net_weights(module.net, weights)
    device = pick_device(cfg.sample.device)
    return Loaded(module.to(device).eval(), stage, stage_cfg, device, weights)


def autocast(cfg: DictConfig, device: torch.device) -> torch.autocast:
    """bf16 autocast on CUDA when sample.autocast is on; a no-op elsewhere."""
    return torch.autocast("cuda", dtype=torch.bfloat16, enabled=bool(cfg.sample.autocast) and device.type == "cuda")


def sampling_overrides(cfg: DictConfig) -> dict:
    """`sample.sampling` entries that are set (null = the model's own setting)."""
    from omegaconf import OmegaConf

    overrides = OmegaConf.to_container(cfg.sample.sampling, resolve=True) if cfg.sample.sampling else {}
    return {k: v for k, v in overrides.items() if v is not None}
