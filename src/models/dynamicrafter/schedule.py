"""DynamiCrafter's diffusion schedule: betas, parameterisation, zero-terminal-SNR and the dynamic latent rescale.

As the releases: 1000 "linear" betas (``linspace(sqrt(0.00085), sqrt(0.012))**2``); eps prediction for 256,
v prediction on zero-terminal-SNR rescaled betas plus the dynamic rescale (clean latents multiplied by
``scale_arr[t]``, which goes linearly 1 -> ``base_scale`` over the first ``turning_step`` steps, then stays) for
512 (0.7) and 1024 (0.3). The DDIM sampler compensates with ``pred_x0 *= scale_arr[t_prev] / scale_arr[t]``
(src.models.sampling.ddim). Latents are ``b c t h w``; every per-timestep value broadcasts over them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Protocol

import numpy as np
import torch
from torch import nn

from src.models.sampling import DDIMSchedule


class IntegerDraws(Protocol):
    """What the schedule needs of the training draws (src.trainers.sample_draws.SampleDraws, which models may not
    import): per-sample integers in [0, high)."""

    def integers(self, purpose: str, high: int) -> torch.Tensor: ...

PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")
TIMESTEP_SPACINGS = ("uniform", "uniform_trailing")
# Root buffers of an official LatentVisualDiffusion state dict (all derived from the betas).
OFFICIAL_ROOT_BUFFERS = (
    "betas",
    "alphas_cumprod",
    "alphas_cumprod_prev",
    "sqrt_alphas_cumprod",
    "sqrt_one_minus_alphas_cumprod",
    "log_one_minus_alphas_cumprod",
    "sqrt_recip_alphas_cumprod",
    "sqrt_recipm1_alphas_cumprod",
    "posterior_variance",
    "posterior_log_variance_clipped",
    "posterior_mean_coef1",
    "posterior_mean_coef2",
)


def linear_betas(num_timesteps: int, linear_start: float, linear_end: float) -> np.ndarray:
    """The LDM "linear" schedule: betas evenly spaced in sqrt space, squared (diffusers' ``scaled_linear``)."""
    return np.linspace(linear_start**0.5, linear_end**0.5, num_timesteps, dtype=np.float64) ** 2


def rescale_zero_terminal_snr(betas: np.ndarray) -> np.ndarray:
    """Lin et al. 2024, Alg. 1: shift and scale sqrt(alpha_bar) so the last step has zero SNR, keep the first."""
    alphas_bar_sqrt = np.sqrt(np.cumprod(1.0 - betas))
    first, last = alphas_bar_sqrt[0], alphas_bar_sqrt[-1]
    alphas_bar_sqrt = (alphas_bar_sqrt - last) * first / (first - last)
    alphas_bar = alphas_bar_sqrt**2
    alphas = np.concatenate([alphas_bar[:1], alphas_bar[1:] / alphas_bar[:-1]])
    return 1.0 - alphas


def dynamic_rescale_array(num_timesteps: int, base_scale: float, turning_step: int = 400) -> np.ndarray:
    """``scale_arr``: linspace(1, base_scale, turning_step) then ``num_timesteps`` x base_scale (length sum)."""
    return np.concatenate([np.linspace(1.0, base_scale, turning_step), np.full(num_timesteps, base_scale)])


def ddim_timesteps(num_train_timesteps: int, num_steps: int, spacing: str) -> list[int]:
    """DDIM timesteps in sampling order (descending), as the release's ``make_ddim_timesteps``.

    ``uniform``: 0, c, 2c, ... plus one (981 ... 1 for 50 of 1000); ``uniform_trailing``: 999, 979, ..., 19
    (needed with zero-terminal SNR so the first step starts from pure noise).
    """
    if num_steps < 1 or num_steps > num_train_timesteps:
        raise ValueError(f"num_steps must be in [1, {num_train_timesteps}], got {num_steps}.")
    if spacing == "uniform":
        c = num_train_timesteps // num_steps
        steps = np.arange(0, num_train_timesteps, c)[:num_steps] + 1
    elif spacing == "uniform_trailing":
        steps = (
            np.round(np.arange(num_train_timesteps, 0, -num_train_timesteps / num_steps)).astype(np.int64) - 1
        )
        steps = np.sort(steps)
    else:
        raise ValueError(f"timestep_spacing={spacing!r} is not one of {TIMESTEP_SPACINGS}.")
    return [int(s) for s in steps[::-1]]


class DynamiCrafterSchedule(nn.Module):
    """Noise schedule + objective of one release; the tensors are non-persistent float32 buffers.

    ``dynamic_rescale_base`` None turns the dynamic rescale off (256); 0.7 / 0.3 are the 512 / 1024 values.
    ``timestep_spacing`` is the DDIM spacing the release samples with.
    """

    def __init__(
        self,
        num_timesteps: int = 1000,
        linear_start: float = 0.00085,
        linear_end: float = 0.012,
        prediction_type: str = "epsilon",
        rescale_betas_zero_snr: bool = False,
        dynamic_rescale_base: float | None = None,
        turning_step: int = 400,
        timestep_spacing: str = "uniform",
    ) -> None:
        super().__init__()
        if prediction_type not in PREDICTION_TYPES:
            raise ValueError(
                f"noise.prediction_type={prediction_type!r} is not supported; use one of {PREDICTION_TYPES}."
            )
        if timestep_spacing not in TIMESTEP_SPACINGS:
            raise ValueError(
                f"noise.timestep_spacing={timestep_spacing!r} is not one of {TIMESTEP_SPACINGS}."
            )
        if rescale_betas_zero_snr and prediction_type == "epsilon":
            raise ValueError(
                "noise.rescale_betas_zero_snr=true with prediction_type=epsilon cannot predict x0 at the zero-SNR "
                "step; use v_prediction (as DynamiCrafter 512/1024) or sample."
            )
        if rescale_betas_zero_snr and timestep_spacing != "uniform_trailing":
            raise ValueError(
                "noise.rescale_betas_zero_snr=true needs noise.timestep_spacing=uniform_trailing so sampling starts "
                "at the zero-SNR step (the 512/1024 releases sample this way)."
            )
        self.num_timesteps = num_timesteps
        self.linear_start = linear_start
        self.linear_end = linear_end
        self.prediction_type = prediction_type
        self.rescale_betas_zero_snr = rescale_betas_zero_snr
        self.dynamic_rescale_base = dynamic_rescale_base
        self.turning_step = turning_step
        self.timestep_spacing = timestep_spacing

        betas = linear_betas(num_timesteps, linear_start, linear_end)
        if rescale_betas_zero_snr:
            betas = rescale_zero_terminal_snr(betas)
        alphas_cumprod = np.cumprod(1.0 - betas)
        scale = (
            dynamic_rescale_array(num_timesteps, dynamic_rescale_base, turning_step)
            if dynamic_rescale_base is not None
            else np.ones(num_timesteps)
        )
        self.register_buffer("betas", torch.tensor(betas, dtype=torch.float32), persistent=False)
        self.register_buffer(
            "alphas_cumprod", torch.tensor(alphas_cumprod, dtype=torch.float32), persistent=False
        )
        self.register_buffer("scale_arr", torch.tensor(scale, dtype=torch.float32), persistent=False)
        self._betas64 = betas

    @property
    def use_dynamic_rescale(self) -> bool:
        return self.dynamic_rescale_base is not None

    # --------------------------------------------------------------------------------------------- training
    def sample_timesteps(self, draws: IntegerDraws) -> torch.Tensor:
        """Uniform integer timesteps in [0, num_timesteps), as the release; one per sample of `draws`."""
        return draws.integers("timesteps", self.num_timesteps)

    def _per_sample(self, values: torch.Tensor, timesteps: torch.Tensor, ndim: int) -> torch.Tensor:
        return values.to(timesteps.device)[timesteps].view(-1, *([1] * (ndim - 1)))

    def rescale_latents(self, latents: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """Clean latents times ``scale_arr[t]`` (identity when the dynamic rescale is off)."""
        if not self.use_dynamic_rescale:
            return latents
        return latents * self._per_sample(self.scale_arr, timesteps, latents.ndim).to(latents.dtype)

    def coefficients(self, timesteps: torch.Tensor, ndim: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(sqrt(alpha_bar_t), sqrt(1 - alpha_bar_t)), shaped to broadcast over ``ndim``-D latents."""
        a = self._per_sample(self.alphas_cumprod, timesteps, ndim)
        return a.sqrt(), (1.0 - a).sqrt()

    def add_noise(self, latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """q(x_t | x_0) = sqrt(a) x_0 + sqrt(1 - a) noise (pass already rescaled latents)."""
        sqrt_a, sqrt_1ma = self.coefficients(timesteps, latents.ndim)
        return (sqrt_a * latents.float() + sqrt_1ma * noise.float()).to(latents.dtype)

    def target(self, latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """Regression target: noise (epsilon), sqrt(a) noise - sqrt(1 - a) x_0 (v), or x_0 (sample)."""
        if self.prediction_type == "epsilon":
            return noise
        if self.prediction_type == "sample":
            return latents
        sqrt_a, sqrt_1ma = self.coefficients(timesteps, latents.ndim)
        return (sqrt_a * noise.float() - sqrt_1ma * latents.float()).to(latents.dtype)

    # --------------------------------------------------------------------------------------------- sampling
    def ddim_timesteps(self, num_steps: int, spacing: str | None = None) -> list[int]:
        return ddim_timesteps(self.num_timesteps, num_steps, spacing or self.timestep_spacing)

    def ddim(self, num_steps: int, eta: float = 1.0, spacing: str | None = None) -> DDIMSchedule:
        """The release's DDIM: its grid, each step landing on the next grid step, and the dynamic-rescale
        compensation of x0 when the rescale is on."""
        steps = self.ddim_timesteps(num_steps, spacing)
        return DDIMSchedule(
            self.alphas_cumprod,
            steps,
            [*steps[1:], None],
            self.prediction_type,
            eta,
            x0_scale=self.scale_arr if self.use_dynamic_rescale else None,
        )

    # --------------------------------------------------------------------------------------------- checkpoints
    def official_root_buffers(self) -> dict[str, torch.Tensor]:
        """The root buffers an official checkpoint of this release stores (betas, alphas_cumprod, ..., scale_arr)."""
        betas = self._betas64
        a = np.cumprod(1.0 - betas)
        a_prev = np.append(1.0, a[:-1])
        with np.errstate(divide="ignore", invalid="ignore"):
            posterior_variance = betas * (1.0 - a_prev) / (1.0 - a)
            values = {
                "betas": betas,
                "alphas_cumprod": a,
                "alphas_cumprod_prev": a_prev,
                "sqrt_alphas_cumprod": np.sqrt(a),
                "sqrt_one_minus_alphas_cumprod": np.sqrt(1.0 - a),
                "log_one_minus_alphas_cumprod": np.log(1.0 - a),
                "sqrt_recip_alphas_cumprod": np.sqrt(1.0 / a),
                "sqrt_recipm1_alphas_cumprod": np.sqrt(1.0 / a - 1),
                "posterior_variance": posterior_variance,
                "posterior_log_variance_clipped": np.log(np.maximum(posterior_variance, 1e-20)),
                "posterior_mean_coef1": betas * np.sqrt(a_prev) / (1.0 - a),
                "posterior_mean_coef2": (1.0 - a_prev) * np.sqrt(1.0 - betas) / (1.0 - a),
            }
        if self.prediction_type == "v_prediction":  # the release registers these two as zeros for v
            values["sqrt_recip_alphas_cumprod"] = np.zeros_like(a)
            values["sqrt_recipm1_alphas_cumprod"] = np.zeros_like(a)
        out = {k: torch.tensor(v, dtype=torch.float32) for k, v in values.items()}
        if self.use_dynamic_rescale:
            out["scale_arr"] = torch.tensor(
                dynamic_rescale_array(self.num_timesteps, self.dynamic_rescale_base, self.turning_step),
                dtype=torch.float32,
            )
        return out

    def check_official_root_buffers(self, buffers: Mapping[str, torch.Tensor], source: str) -> None:
        """Require the checkpoint's schedule buffers to be this release's: same names, same betas/scale values.

        A mismatch means the model config is another release's (e.g. the 256 config with a 512 checkpoint).
        """
        expected = self.official_root_buffers()
        missing = sorted(set(expected) - set(buffers))
        unexpected = sorted(set(buffers) - set(expected))
        problems = []
        if missing:
            problems.append(f"missing schedule buffers {missing}")
        if unexpected:
            problems.append(f"unexpected schedule buffers {unexpected}")
        for name in ("betas", "alphas_cumprod", "scale_arr"):
            if name in expected and name in buffers:
                got = buffers[name].double().flatten()
                want = expected[name].double()
                if got.shape != want.shape or not torch.allclose(got, want, rtol=1e-4, atol=1e-6):
                    problems.append(f"{name} differs from this config's schedule")
        if problems:
            raise ValueError(
                f"{source}: the checkpoint's diffusion schedule does not match model.noise "
                f"(prediction_type={self.prediction_type}, rescale_betas_zero_snr={self.rescale_betas_zero_snr}, "
                f"dynamic_rescale_base={self.dynamic_rescale_base}): {'; '.join(problems)}. Use the model config of "
                "the checkpoint's release (conf/model/dynamicrafter_256|512|1024.yaml)."
            )

    def extra_repr(self) -> str:
        return (
            f"prediction_type={self.prediction_type}, zero_snr={self.rescale_betas_zero_snr}, "
            f"dynamic_rescale_base={self.dynamic_rescale_base}, spacing={self.timestep_spacing}, "
            f"terminal_alpha_bar={float(self.alphas_cumprod[-1]):.3g}"
            + ("" if math.isfinite(float(self.alphas_cumprod[-1])) else " (not finite)")
        )
