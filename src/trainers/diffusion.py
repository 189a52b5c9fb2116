"""The shared diffusion training objective: noise schedule, noising, targets and loss weights.

One `NoiseSchedule` config builds both the training scheduler (here) and the sampling grid
(`NoiseSchedule.ddim` for `src.models.sampling`), so training and sampling can never disagree on betas, prediction type or
zero-terminal-SNR rescaling (Moore-AnimateAnyone trains with `scaled_linear` and samples with `linear`).
Latents are `b c t h w` (images are `t == 1`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from diffusers import DDIMScheduler, DDPMScheduler

from src.models.sampling import DDIMSchedule
from src.trainers.sample_draws import SampleDraws

PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")


@dataclass
class NoiseSchedule:
    """Betas and parameterisation; the same values configure training and sampling schedulers."""

    num_train_timesteps: int = 1000
    beta_schedule: str = "scaled_linear"
    beta_start: float = 0.00085
    beta_end: float = 0.012
    prediction_type: str = "v_prediction"
    rescale_betas_zero_snr: bool = True
    timestep_spacing: str = "trailing"
    steps_offset: int = 1

    def __post_init__(self) -> None:
        if self.prediction_type not in PREDICTION_TYPES:
            raise ValueError(
                f"noise.prediction_type={self.prediction_type!r} is not supported; use one of {PREDICTION_TYPES}."
            )
        if self.rescale_betas_zero_snr and self.timestep_spacing != "trailing":
            raise ValueError(
                "noise.rescale_betas_zero_snr=true needs noise.timestep_spacing=trailing so sampling starts at the "
                "zero-SNR step (Lin et al. 2024); set timestep_spacing: trailing."
            )

    def scheduler_kwargs(self) -> dict:
        return asdict(self)

    def training_scheduler(self) -> DDPMScheduler:
        return DDPMScheduler(clip_sample=False, **self.scheduler_kwargs())

    def sampling_scheduler(self) -> DDIMScheduler:
        return DDIMScheduler(clip_sample=False, set_alpha_to_one=False, **self.scheduler_kwargs())

    def ddim(self, num_steps: int, eta: float = 0.0) -> DDIMSchedule:
        """The DDIM grid of diffusers' DDIMScheduler for these settings (its spacing and its landing step
        t - T // n, which can differ by one from the next grid step when n does not divide T)."""
        if num_steps < 1:
            raise ValueError(f"num_steps must be >= 1, got {num_steps}.")
        scheduler = self.sampling_scheduler()
        scheduler.set_timesteps(num_steps)
        jump = self.num_train_timesteps // num_steps
        timesteps = [int(t) for t in scheduler.timesteps]
        prev = [t - jump if t - jump >= 0 else None for t in timesteps]
        return DDIMSchedule(scheduler.alphas_cumprod, timesteps, prev, self.prediction_type, eta)


TIMESTEP_SAMPLINGS = ("uniform", "logit_normal")


@dataclass
class DiffusionLoss:
    """Loss options: offset noise, Min-SNR-gamma weighting (None = plain MSE), and how training timesteps are
    drawn: uniform (the papers), or logit-normal (Esser et al. 2024: t/T = sigmoid(N(logit_mean, logit_std)),
    a positive mean favours the high-noise steps where the layout is decided)."""

    noise_offset: float = 0.0
    snr_gamma: float | None = None
    timestep_sampling: str = "uniform"
    logit_mean: float = 0.0
    logit_std: float = 1.0

    def __post_init__(self) -> None:
        if self.timestep_sampling not in TIMESTEP_SAMPLINGS:
            raise ValueError(
                f"loss.timestep_sampling={self.timestep_sampling!r} is not one of {TIMESTEP_SAMPLINGS}."
            )
        if self.logit_std <= 0:
            raise ValueError(f"loss.logit_std must be positive, got {self.logit_std}.")


class DiffusionObjective(torch.nn.Module):
    """Draws timesteps and noise, builds the noisy input and the regression target, weights the loss.

    The schedule tensors are buffers (kept fp32 by the strategies) so the objective moves with the module.
    """

    def __init__(self, schedule: NoiseSchedule, loss: DiffusionLoss) -> None:
        super().__init__()
        self.schedule = schedule
        self.loss_cfg = loss
        scheduler = schedule.training_scheduler()
        alphas_cumprod = scheduler.alphas_cumprod.to(torch.float64)
        self.register_buffer("alphas_cumprod", alphas_cumprod.float(), persistent=False)
        snr = alphas_cumprod / (1.0 - alphas_cumprod)
        self.register_buffer("snr", snr.float(), persistent=False)

    @property
    def num_timesteps(self) -> int:
        return self.schedule.num_train_timesteps

    def sample_timesteps(self, draws: SampleDraws) -> torch.Tensor:
        """One training timestep per sample of `draws` (uniform, or logit-normal), on its device."""
        if self.loss_cfg.timestep_sampling == "uniform":
            return draws.integers("timesteps", self.num_timesteps)
        normal = draws.normal("timesteps")
        fraction = torch.sigmoid(self.loss_cfg.logit_mean + self.loss_cfg.logit_std * normal)
        return (fraction * self.num_timesteps).long().clamp_(0, self.num_timesteps - 1)

    def sample_noise(self, latents: torch.Tensor, draws: SampleDraws) -> torch.Tensor:
        """Gaussian noise like `latents` plus the optional offset noise: one value per sample and channel
        (constant over t h w). Row i is sample i's own draw (`draws`, keyed on its global index)."""
        noise = draws.normal("noise", latents.shape[1:], dtype=latents.dtype)
        if self.loss_cfg.noise_offset:
            offset = draws.normal("noise_offset", latents.shape[1:2] + (1,) * (latents.ndim - 2), latents.dtype)
            noise = noise + self.loss_cfg.noise_offset * offset
        return noise

    def _coefficients(self, timesteps: torch.Tensor, ndim: int) -> tuple[torch.Tensor, torch.Tensor]:
        a = self.alphas_cumprod[timesteps]
        shape = (-1,) + (1,) * (ndim - 1)
        return a.sqrt().view(shape), (1.0 - a).sqrt().view(shape)

    def add_noise(self, latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        sqrt_a, sqrt_1ma = self._coefficients(timesteps, latents.ndim)
        return (sqrt_a * latents.float() + sqrt_1ma * noise.float()).to(latents.dtype)

    def target(self, latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        if self.schedule.prediction_type == "epsilon":
            return noise
        if self.schedule.prediction_type == "sample":
            return latents
        sqrt_a, sqrt_1ma = self._coefficients(timesteps, latents.ndim)
        return (sqrt_a * noise.float() - sqrt_1ma * latents.float()).to(latents.dtype)

    def loss_weights(self, timesteps: torch.Tensor) -> torch.Tensor:
        """Min-SNR-gamma weights (Hang et al. 2023): min(snr, g) / snr for epsilon, / (snr + 1) for v, and
        min(snr, g) itself for x0 ("sample") prediction, the same weighting expressed in each target's units."""
        gamma = self.loss_cfg.snr_gamma
        if gamma is None:
            return torch.ones(timesteps.shape, device=timesteps.device)
        snr = self.snr[timesteps]
        clipped = torch.clamp(snr, max=gamma)
        if self.schedule.prediction_type == "v_prediction":
            return clipped / (snr + 1.0)
        if self.schedule.prediction_type == "sample":
            return clipped
        # epsilon: min(snr, gamma) / snr; at a zero-SNR step the limit of the ratio is gamma / snr -> use 1.
        return torch.where(snr > 0, clipped / snr.clamp(min=1e-12), torch.ones_like(snr))

    def loss(self, prediction: torch.Tensor, target: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        per_sample = (prediction.float() - target.float()).pow(2).flatten(1).mean(dim=1)
        return (per_sample * self.loss_weights(timesteps)).mean()
