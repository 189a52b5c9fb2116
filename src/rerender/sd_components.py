"""The Stable Diffusion 1.5 + ControlNet parts that Rerender-A-Video's key-frame translation runs on.

One small record so the loaders (`src.rerender.sd_loading`: diffusers folders, single-file civitai checkpoints,
the original `control_sd15_*.pth`) and the key-frame translator (`src.rerender.keyframe_translation`) meet at
one interface and can be built and tested apart: tests construct tiny random components directly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class SDComponents:
    """diffusers modules of one SD1.5 checkpoint and its ControlNet, already on their device and dtype.

    unet: UNet2DConditionModel; vae: AutoencoderKL; text_encoder: CLIPTextModel; tokenizer: CLIPTokenizer;
    controlnet: ControlNetModel (Canny or HED, per `control_type`); scheduler_config: the checkpoint's noise
    schedule (beta_start, beta_end, beta_schedule, num_train_timesteps, prediction_type, ...) as a dict.
    """

    unet: Any
    vae: Any
    text_encoder: Any
    tokenizer: Any
    controlnet: Any
    scheduler_config: dict
    control_type: str  # "canny" | "hed"
