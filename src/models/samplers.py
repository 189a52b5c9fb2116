"""DDIM sampling with classifier-free guidance, shared by every system.

The denoiser is any callable `model(x, t) -> prediction` in the schedule's parameterisation; guidance is
composed by the caller with `cfg_combine` (one joint scale, optional guidance rescale). Latents are
`b c t h w`. The scheduler comes from the same `NoiseSchedule` that trained the model.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from diffusers import DDIMScheduler
from tqdm.auto import tqdm


def cfg_combine(
    cond: torch.Tensor, uncond: torch.Tensor, scale: float, rescale: float = 0.0
) -> torch.Tensor:
    """uncond + scale * (cond - uncond); `rescale` > 0 applies guidance rescale (Lin et al. 2024, sec. 3.4)."""
    guided = uncond + scale * (cond - uncond)
    if rescale > 0:
        dims = tuple(range(1, cond.ndim))
        std_cond = cond.std(dim=dims, keepdim=True)
        std_guided = guided.std(dim=dims, keepdim=True)
        rescaled = guided * (std_cond / std_guided.clamp(min=1e-12))
        guided = rescale * rescaled + (1.0 - rescale) * guided
    return guided


@torch.no_grad()
def ddim_sample(
    model: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    noise: torch.Tensor,
    scheduler: DDIMScheduler,
    num_steps: int,
    eta: float = 0.0,
    generator: torch.Generator | None = None,
    progress: bool = False,
) -> torch.Tensor:
    """Runs `num_steps` DDIM steps from `noise` (already scaled by `init_noise_sigma`, which is 1 for DDIM)."""
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}.")
    scheduler.set_timesteps(num_steps, device=noise.device)
    x = noise * scheduler.init_noise_sigma
    for t in tqdm(scheduler.timesteps, desc="ddim", disable=not progress, leave=False):
        t_batch = torch.full((x.shape[0],), int(t), device=x.device, dtype=torch.long)
        prediction = model(x, t_batch)
        x = scheduler.step(prediction.to(x.dtype), t, x, eta=eta, generator=generator).prev_sample
    return x
