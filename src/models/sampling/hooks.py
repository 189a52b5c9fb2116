"""Per-step hooks of the denoising loop: the place where pipelines edit latents and x0 estimates.

Rerender-A-Video's constraints are such edits (its research note, "Step windows"): pixel-aware fusion replaces the
latent before a step (`before_step`, which sees the previous step's noise direction in `state.direction`), the
SDEdit start re-noises an encoded frame at a chosen step (`before_step` with `state.add_noise`), AdaIN and
shape-aware fusion edit the predicted x0 (`on_x0`), and an anchor pass records x0 per step (`on_x0`, returning
it unchanged). `state.fraction` places a step in the schedule (0 = the noisiest) for step windows.
"""

from __future__ import annotations

import torch

from src.models.sampling.ddim import StepState


class SamplingHook:
    """Base class: every method returns its input unchanged; subclasses override what they edit."""

    def before_step(self, state: StepState, x: torch.Tensor) -> torch.Tensor:
        """The latent x_t the model is about to see (`b c t h w`)."""
        return x

    def on_x0(self, state: StepState, x0: torch.Tensor) -> torch.Tensor:
        """The predicted clean latent (float32, `b c t h w`) from which x_{t_prev} is computed."""
        return x0

    def after_step(self, state: StepState, x: torch.Tensor) -> torch.Tensor:
        """The new latent x_{t_prev}."""
        return x
