"""DDIM sampling for DynamiCrafter: the release's update rule, classifier-free guidance and guidance rescale.

The update is the release's ``DDIMSampler.p_sample_ddim``: sigma_t = eta * sqrt((1 - a_prev) / (1 - a_t)) *
sqrt(1 - a_t / a_prev), x_prev = sqrt(a_prev) x0 + sqrt(1 - a_prev - sigma_t^2) eps + sigma_t z, with
a_prev = alpha_bar[0] after the last step, and, with the dynamic rescale, x0 *= scale[t_prev] / scale[t]
(ratio 1 at the last step). Guidance combines model outputs (eps or v) before that:
joint: u + s (c - u); separate (the release's multi-condition CFG): u + s_img (c_img - u) + s_txt (c - c_img),
where u = empty text + CLIP of a zero image, c_img = empty text + the image, c = text + image (the concatenated
latent is the same in every branch). Guidance rescale (Lin et al. 2024) mixes in the guided output rescaled to
the conditional output's std. Latents are ``b c t h w``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from tqdm.auto import tqdm

from .schedule import DynamiCrafterSchedule


def rescale_guidance(guided: torch.Tensor, cond: torch.Tensor, rescale: float) -> torch.Tensor:
    """``rescale * guided * std(cond) / std(guided) + (1 - rescale) * guided`` (std per sample over c t h w)."""
    if rescale <= 0:
        return guided
    dims = tuple(range(1, cond.ndim))
    std_cond = cond.std(dim=dims, keepdim=True)
    std_guided = guided.std(dim=dims, keepdim=True)
    return rescale * guided * (std_cond / std_guided.clamp(min=1e-12)) + (1.0 - rescale) * guided


def combine_guidance(
    cond: torch.Tensor,
    uncond: torch.Tensor,
    text_scale: float,
    image_only: torch.Tensor | None = None,
    image_scale: float | None = None,
    rescale: float = 0.0,
) -> torch.Tensor:
    """Classifier-free guidance on model outputs; ``image_only`` (empty text + image) enables separate scales."""
    if image_only is None:
        guided = uncond + text_scale * (cond - uncond)
    else:
        if image_scale is None:
            raise ValueError("combine_guidance: image_only was given without image_scale.")
        guided = uncond + image_scale * (image_only - uncond) + text_scale * (cond - image_only)
    return rescale_guidance(guided, cond, rescale)


@torch.no_grad()
def ddim_sample(
    denoise: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    noise: torch.Tensor,
    schedule: DynamiCrafterSchedule,
    num_steps: int,
    eta: float = 1.0,
    timestep_spacing: str | None = None,
    generator: torch.Generator | None = None,
    progress: bool = False,
) -> torch.Tensor:
    """Run DDIM from ``noise`` (x_T); ``denoise(x, t)`` returns the (already guided) model output for t (b,)."""
    steps = schedule.ddim_timesteps(num_steps, timestep_spacing)
    alphas = schedule.alphas_cumprod.double().cpu()
    scales = schedule.scale_arr.double().cpu()
    x = noise
    b = x.shape[0]
    for i, t in enumerate(tqdm(steps, desc="ddim", disable=not progress, leave=False)):
        is_last = i == len(steps) - 1
        t_prev = None if is_last else steps[i + 1]
        a_t = float(alphas[t])
        a_prev = float(alphas[0] if t_prev is None else alphas[t_prev])
        timesteps = torch.full((b,), t, device=x.device, dtype=torch.long)
        output = denoise(x, timesteps)
        x0, eps = schedule.predict_x0_and_eps(x, output, timesteps)
        if schedule.use_dynamic_rescale and t_prev is not None:
            x0 = x0 * float(scales[t_prev] / scales[t])
        sigma = eta * ((1 - a_prev) / (1 - a_t)) ** 0.5 * (1 - a_t / a_prev) ** 0.5 if eta > 0 else 0.0
        direction = max(1.0 - a_prev - sigma**2, 0.0) ** 0.5 * eps
        x_prev = a_prev**0.5 * x0 + direction
        if sigma > 0:
            z = torch.randn(x.shape, generator=generator, device=x.device, dtype=torch.float32)
            x_prev = x_prev + sigma * z
        x = x_prev.to(noise.dtype)
    return x
