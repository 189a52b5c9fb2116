"""Tiny seeded Animate Anyone and DynamiCrafter modules (the demo configs at toy size) for the sampling tests.

The motion modules get a live (random) output projection so frames interact and window placement matters.
"""

from __future__ import annotations

import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf

from src.config import register_resolvers
from tests.conftest import ROOT

register_resolvers()

AA_SIZE = 16  # pixels; 8x8x12 "latents" through the demo's 3-level tiny UNets
DC_FRAMES, DC_SIZE = 4, 16


def _compose(*overrides: str):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose("train", overrides=list(overrides))


def tiny_animate_anyone(max_seq_length: int = 32, seed: int = 0, live_motion: bool = True):
    """The demo's tiny Animate Anyone in its temporal stage, float32, eval mode; `live_motion` False keeps the
    motion modules' zero output projection (identity: frames are then denoised independently)."""
    cfg = _compose("experiment=animate_anyone_demo", f"model.motion_adapter.max_seq_length={max_seq_length}")
    torch.manual_seed(seed)
    return instantiate(cfg.model, stage="temporal", zero_motion_proj_out=not live_motion).eval()


def tiny_dynamicrafter(seed: int = 0):
    """The demo's tiny DynamiCrafter at 4 frames with the 512 release's objective (v + zero-SNR + dynamic
    rescale 0.7), so the pins cover the dynamic-rescale compensation."""
    cfg = _compose("experiment=dynamicrafter_demo", "noise@model.noise=dynamicrafter_v")
    model = OmegaConf.to_container(cfg.model, resolve=True)
    model["net"]["unet"]["temporal_length"] = DC_FRAMES
    model["net"]["image_proj"]["video_length"] = DC_FRAMES
    torch.manual_seed(seed)
    return instantiate(OmegaConf.create(model), stage="finetune", init_weights=None).eval()


def aa_inputs(num_frames: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(reference `1 3 h w` in [-1, 1], pose `1 3 t h w` in [0, 1]) with smooth pose motion over frames."""
    g = torch.Generator().manual_seed(seed)
    reference = torch.rand(1, 3, AA_SIZE, AA_SIZE, generator=g) * 2 - 1
    base = torch.rand(1, 3, 1, AA_SIZE, AA_SIZE, generator=g)
    drift = torch.linspace(0, 1, num_frames).view(1, 1, -1, 1, 1)
    pose = (base + 0.5 * drift * torch.rand(1, 3, 1, AA_SIZE, AA_SIZE, generator=g)).clamp(0, 1)
    return reference, pose


def dc_inputs(seed: int = 0) -> tuple[torch.Tensor, list[str]]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(1, 3, DC_SIZE, DC_SIZE, generator=g) * 2 - 1, ["a red star moves left"]
