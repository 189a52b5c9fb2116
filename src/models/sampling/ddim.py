"""The DDIM update (Song et al. 2021) on an explicit timestep grid, shared by every system.

x0 and eps come from the model output in the schedule's parameterisation (eps, v or x0); then
sigma_t = eta * sqrt((1 - a_prev) / (1 - a_t)) * sqrt(1 - a_t / a_prev) and
x_prev = sqrt(a_prev) x0 + sqrt(max(1 - a_prev - sigma_t^2, 0)) eps + sigma_t z, with a_prev the schedule's
first alpha_bar after the last step (as LDM and diffusers' `set_alpha_to_one=False`). `x0_scale` is
DynamiCrafter's dynamic latent rescale: x0 *= scale[t_prev] / scale[t] before the update (not at the last step).
Each schedule builds its grid: `NoiseSchedule.ddim` (diffusers' spacing rules) and `DynamiCrafterSchedule.ddim`
(the release's). Latents are `b c t h w`; the update runs in float32 and returns float32.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")


@dataclass
class StepState:
    """Where the loop is: step `index` of `num_steps` (0 = the noisiest), its timesteps and alpha_bars, and the
    previous step's noise direction sqrt(1 - a_prev - sigma^2) eps (None before the first step)."""

    index: int
    num_steps: int
    timestep: int
    prev_timestep: int | None
    alpha_bar: float
    alpha_bar_prev: float
    direction: torch.Tensor | None = None

    @property
    def fraction(self) -> float:
        """index / num_steps: Rerender's step windows are fractions of the schedule."""
        return self.index / self.num_steps

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """q(x_t | x0) at this step's timestep (e.g. SDEdit's start from an encoded frame)."""
        return self.alpha_bar**0.5 * x0 + (1.0 - self.alpha_bar) ** 0.5 * noise


class DDIMSchedule:
    """A DDIM grid: `timesteps` (descending), the timestep each step lands on (`prev_timesteps`, None = the end),
    the float32 `alphas_cumprod` of training, the parameterisation and eta."""

    def __init__(
        self,
        alphas_cumprod: torch.Tensor,
        timesteps: Sequence[int],
        prev_timesteps: Sequence[int | None],
        prediction_type: str,
        eta: float = 0.0,
        x0_scale: torch.Tensor | None = None,
    ) -> None:
        if prediction_type not in PREDICTION_TYPES:
            raise ValueError(f"prediction_type={prediction_type!r} is not one of {PREDICTION_TYPES}.")
        if len(timesteps) < 1 or len(timesteps) != len(prev_timesteps):
            raise ValueError(
                f"DDIMSchedule needs at least one timestep and one prev timestep per step; got {len(timesteps)} "
                f"and {len(prev_timesteps)}."
            )
        if eta < 0:
            raise ValueError(f"eta must be >= 0, got {eta}.")
        self.alphas_cumprod = alphas_cumprod.detach().float().cpu()
        self.timesteps = [int(t) for t in timesteps]
        self.prev_timesteps = [None if p is None else int(p) for p in prev_timesteps]
        self.prediction_type = prediction_type
        self.eta = float(eta)
        self.x0_scale = None if x0_scale is None else x0_scale.detach().double().cpu()

    def states(self) -> list[StepState]:
        alphas = self.alphas_cumprod.double()
        n = len(self.timesteps)
        return [
            StepState(
                index=i,
                num_steps=n,
                timestep=t,
                prev_timestep=p,
                alpha_bar=float(alphas[t]),
                alpha_bar_prev=float(alphas[0] if p is None else alphas[p]),
            )
            for i, (t, p) in enumerate(zip(self.timesteps, self.prev_timesteps))
        ]

    def predict(
        self, x: torch.Tensor, output: torch.Tensor, state: StepState
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(x0, eps) estimates in float32 from the model output at x_t (x0 already dynamically rescaled)."""
        a = self.alphas_cumprod[state.timestep].to(x.device)
        sqrt_a, sqrt_1ma = a.sqrt(), (1.0 - a).sqrt()
        x, output = x.float(), output.float()
        if self.prediction_type == "v_prediction":
            x0, eps = sqrt_a * x - sqrt_1ma * output, sqrt_a * output + sqrt_1ma * x
        elif self.prediction_type == "epsilon":
            x0, eps = (x - sqrt_1ma * output) / sqrt_a, output
        else:
            x0, eps = output, (x - sqrt_a * output) / sqrt_1ma.clamp(min=1e-8)
        if self.x0_scale is not None and state.prev_timestep is not None:
            x0 = x0 * float(self.x0_scale[state.prev_timestep] / self.x0_scale[state.timestep])
        return x0, eps

    def update(
        self,
        x0: torch.Tensor,
        eps: torch.Tensor,
        state: StepState,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(x_prev, noise direction) from the (possibly edited) x0 and eps; x_prev is float32."""
        a_t, a_prev = state.alpha_bar, state.alpha_bar_prev
        sigma = (
            self.eta * ((1 - a_prev) / (1 - a_t)) ** 0.5 * (1 - a_t / a_prev) ** 0.5 if self.eta > 0 else 0.0
        )
        direction = max(1.0 - a_prev - sigma**2, 0.0) ** 0.5 * eps
        x_prev = a_prev**0.5 * x0 + direction
        if sigma > 0:
            z = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=torch.float32)
            x_prev = x_prev + sigma * z
        return x_prev, direction
