"""`denoise_loop`: the one DDIM loop of the project, with guidance, context windows and hooks per step.

The model is `model(x, t, frames) -> output`: x `(k*b) c f h w` holds the k guidance branches stacked in
`Guidance.branches` order (the model builds each branch's conditioning in that order), t `(k*b,)` the timestep,
and `frames` the indices of the video's frames in x (all of them without context windows), so a model can
slice per-frame conditioning such as pose features. Per step: hooks' `before_step`, the model over the windows
(mean per frame), guidance, x0/eps, hooks' `on_x0`, the DDIM update, hooks' `after_step`. `start_step` skips the
first steps of the grid (SDEdit / img2img: `noise` is then x_t at that step) while step indices, fractions and
hooks keep the full schedule's numbering, so step windows mean the same with or without a late start.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import torch
from tqdm.auto import tqdm

from src.models.sampling.context import ContextWindows
from src.models.sampling.ddim import DDIMSchedule
from src.models.sampling.guidance import Guidance
from src.models.sampling.hooks import SamplingHook

Model = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


@torch.no_grad()
def denoise_loop(
    model: Model,
    noise: torch.Tensor,
    schedule: DDIMSchedule,
    guidance: Guidance | None = None,
    windows: ContextWindows | None = None,
    hooks: Sequence[SamplingHook] = (),
    generator: torch.Generator | None = None,
    progress: bool = False,
    start_step: int = 0,
) -> torch.Tensor:
    """Runs the schedule from `noise` (x_T, or x_t of step `start_step`; `b c t h w`); returns x_0 in `noise.dtype`."""
    if noise.ndim != 5:
        raise ValueError(f"denoise_loop: noise must be a latent video (b, c, t, h, w), got {tuple(noise.shape)}.")
    states = schedule.states()
    if not 0 <= start_step < len(states):
        raise ValueError(f"denoise_loop: start_step={start_step} is outside the {len(states)}-step schedule.")
    guidance = guidance or Guidance()
    windows = windows or ContextWindows(frames=noise.shape[2])
    k = len(guidance.branches)
    x = noise
    direction = None
    for state in tqdm(states[start_step:], desc="ddim", disable=not progress, leave=False):
        state.direction = direction
        for hook in hooks:
            x = hook.before_step(state, x)
        timesteps = torch.full((k * x.shape[0],), state.timestep, device=x.device, dtype=torch.long)
        branches = x.repeat(k, 1, 1, 1, 1)
        output = windows.apply(functools.partial(_call, model, timesteps), branches)
        output = guidance.combine(output)
        x0, eps = schedule.predict(x, output, state)
        for hook in hooks:
            x0 = hook.on_x0(state, x0)
        x_prev, direction = schedule.update(x0, eps, state, generator)
        x = x_prev.to(noise.dtype)
        for hook in hooks:
            x = hook.after_step(state, x)
    return x


def _call(model: Model, timesteps: torch.Tensor, x: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
    return model(x, timesteps, frames)
