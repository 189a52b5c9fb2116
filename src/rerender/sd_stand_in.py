"""STAND-IN until the SD/ControlNet loaders land (branch rrload): the two calls the Rerender pipeline makes to
get its Stable Diffusion parts, kept minimal and in one place so the merge swaps them for the real ones.

- `load_sd_components(section)`: `model.sd` -> SDComponents, from diffusers folders only (no single-file
  checkpoints, no `control_sd15_*.pth`); the real loader replaces this function.
- `control_maps(frames, section)`: Canny edges with OpenCV (no HED); the real control-map module replaces it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from src.rerender.sd_components import SDComponents

__all__ = ["control_maps", "load_sd_components"]


def _folder(path, key: str) -> Path:
    path = Path(str(path))
    if not path.is_dir():
        raise FileNotFoundError(
            f"{key}={path}: no such folder; point it at a diffusers folder of your weights "
            "(Stable Diffusion 1.5: unet/ vae/ text_encoder/ tokenizer/ scheduler/; ControlNet: config.json + weights)"
        )
    return path


def load_sd_components(section) -> SDComponents:
    """SD1.5 + ControlNet from diffusers folders (`section.folder`, `section.controlnet`), float32 on the CPU."""
    from diffusers import AutoencoderKL, ControlNetModel, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    sd, control = (
        _folder(section.folder, "model.sd.folder"),
        _folder(section.controlnet, "model.sd.controlnet"),
    )
    return SDComponents(
        unet=UNet2DConditionModel.from_pretrained(sd / "unet").eval(),
        vae=AutoencoderKL.from_pretrained(sd / "vae").eval(),
        text_encoder=CLIPTextModel.from_pretrained(sd / "text_encoder").eval(),
        tokenizer=CLIPTokenizer.from_pretrained(sd / "tokenizer"),
        controlnet=ControlNetModel.from_pretrained(control).eval(),
        scheduler_config=dict(DDIMScheduler.load_config(sd / "scheduler")),
        control_type=str(section.control_type),
    )


def control_maps(frames: torch.Tensor, section) -> torch.Tensor:
    """`n 3 H W` frames in [0, 1] -> Canny edge maps `n 3 H W` in {0, 1} (white edges on black, as ControlNet's)."""
    import cv2

    if str(section.control_type) != "canny":
        raise NotImplementedError(
            f"model.sd.control_type={section.control_type}: only canny until the HED detector lands"
        )
    maps = []
    for frame in frames:
        rgb = (frame.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).cpu().numpy()
        edges = cv2.Canny(np.ascontiguousarray(rgb), int(section.canny_low), int(section.canny_high))
        maps.append(torch.from_numpy(edges).float().div(255)[None].expand(3, -1, -1))
    return torch.stack(maps).to(frames.device)
