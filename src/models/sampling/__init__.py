"""The one denoising loop shared by every inference pipeline (Animate Anyone, DynamiCrafter, Rerender-A-Video).

`denoise_loop` runs DDIM (`DDIMSchedule`) with per-step hooks: classifier-free guidance (`Guidance`), context
windows over frames (`ContextWindows`) and `SamplingHook`s that edit the latent before a step, the predicted
x0, or the latent after a step. Latents are `b c t h w`.
"""

from src.models.sampling.context import ContextWindows
from src.models.sampling.ddim import DDIMSchedule, StepState
from src.models.sampling.guidance import Guidance, combine_guidance, rescale_guidance
from src.models.sampling.hooks import SamplingHook
from src.models.sampling.loop import denoise_loop

__all__ = [
    "ContextWindows",
    "DDIMSchedule",
    "Guidance",
    "SamplingHook",
    "StepState",
    "combine_guidance",
    "denoise_loop",
    "rescale_guidance",
]
