"""Frozen latent codecs: images (N, 3, H, W) in [-1, 1] <-> latents (N, C, H/d, W/d).

One interface for the real SD VAE and for a weight-free "tiny latent" used by the CPU demo, so trainers
and samplers never know which one they hold. Callers wrap encode/decode in `torch.no_grad()`.
A codec that samples its posterior (`samples_posterior`) takes that sample's standard-normal `noise` from the
caller: training passes each sample's own draws (src.trainers.sample_draws), so the latents do not depend on
torch's global RNG, the rank or the batching; without `noise` it draws from the global RNG.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from src.models.weights import load_diffusers_model

__all__ = ["AutoencoderKLCodec", "LatentCodec", "PixelShuffleCodec", "VAECodec"]

VAE_PUBLISHED_AT = (
    "https://huggingface.co/stabilityai/sd-vae-ft-mse (diffusers folder: config.json + "
    "diffusion_pytorch_model.safetensors), or the `vae` folder of an SD 1.5 diffusers repo"
)


class LatentCodec(nn.Module):
    """Base class: `encode` (N,3,H,W) -> (N,latent_channels,H/downsample,W/downsample); `decode` inverts it."""

    latent_channels: int
    downsample: int
    samples_posterior: bool = False  # True: `encode` is a random draw, whose noise the caller may give

    def latent_shape(self, height: int, width: int) -> tuple[int, int, int]:
        """(C, h, w) of one image's latent (also the shape of its posterior noise)."""
        return self.latent_channels, height // self.downsample, width // self.downsample

    def _check_images(self, x: torch.Tensor) -> None:
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(
                f"{type(self).__name__}.encode expects images (N, 3, H, W), got {tuple(x.shape)}."
            )
        h, w = x.shape[-2:]
        if h % self.downsample or w % self.downsample:
            raise ValueError(
                f"{type(self).__name__}: image size {h}x{w} is not divisible by the codec's downsample factor "
                f"{self.downsample}; resize or crop the data to a multiple of {self.downsample}."
            )

    def _check_latents(self, z: torch.Tensor) -> None:
        if z.ndim != 4 or z.shape[1] != self.latent_channels:
            raise ValueError(
                f"{type(self).__name__}.decode expects latents (N, {self.latent_channels}, h, w), got {tuple(z.shape)}."
            )

    def encode(self, x: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        """Images -> latents; `noise` (N, *latent_shape) is the posterior sample's noise of a sampling codec."""
        raise NotImplementedError

    def encode_moments(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(mean, std) of the scaled latent posterior, std None for a deterministic codec: training draws the
        latent itself (mean + std * its own per-sample normal), so a cache of the moments trains exactly alike."""
        return self.encode(x), None

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class PixelShuffleCodec(LatentCodec):
    """Weight-free space-to-depth codec (pixel_unshuffle); `decode(encode(x)) == x` exactly. For the CPU demo."""

    def __init__(self, factor: int = 4) -> None:
        super().__init__()
        if factor < 1:
            raise ValueError(f"PixelShuffleCodec factor must be >= 1, got {factor}.")
        self.downsample = factor
        self.latent_channels = 3 * factor * factor

    def encode(self, x: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        self._check_images(x)  # deterministic: `noise` is not used
        return F.pixel_unshuffle(x, self.downsample)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        self._check_latents(z)
        return F.pixel_shuffle(z, self.downsample)


class AutoencoderKLCodec(LatentCodec):
    """A frozen diffusers AutoencoderKL as a codec: `encode` returns `scaling_factor * z` with z a posterior
    sample (or its mode), `decode` divides by it; `slice_size` (images per chunk) bounds peak memory for long
    videos. Subclasses say where the VAE comes from and call `_adopt`."""

    def _adopt(self, vae: nn.Module, scaling_factor: float, sample_posterior: bool, slice_size: int | None) -> None:
        self.vae = vae.requires_grad_(False).eval()
        self.scaling_factor = float(scaling_factor)
        self.sample_posterior = self.samples_posterior = bool(sample_posterior)
        self.slice_size = slice_size
        self.latent_channels = int(vae.config.latent_channels)
        self.downsample = 2 ** (len(vae.config.block_out_channels) - 1)

    def train(self, mode: bool = True) -> AutoencoderKLCodec:
        """The VAE is frozen: it stays in eval mode whatever the parent module does."""
        super().train(mode)
        self.vae.eval()
        return self

    def _chunks(self, x: torch.Tensor) -> list[torch.Tensor]:
        size = self.slice_size or x.shape[0]
        return list(x.split(size))

    def encode(self, x: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        """Images -> `scaling_factor * z`, z = mean + std * noise (the posterior sample; `noise` from the
        global RNG when None) or the posterior's mode when `sample_posterior` is off. The same moments as
        `encode_moments`, so a latent drawn from cached moments equals one encoded now."""
        if noise is not None and tuple(noise.shape) != (x.shape[0], *self.latent_shape(*x.shape[-2:])):
            raise ValueError(
                f"{type(self).__name__}.encode: posterior noise {tuple(noise.shape)} does not match the latents "
                f"{(x.shape[0], *self.latent_shape(*x.shape[-2:]))} of images {tuple(x.shape)}."
            )
        mean, std = self.encode_moments(x)
        if std is None:
            return mean
        return mean + std * (torch.randn_like(std) if noise is None else noise.to(std))

    def encode_moments(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Scaled posterior mean and std (std None when `sample_posterior` is off: the latent is the mode)."""
        self._check_images(x)
        means, stds = [], []
        for chunk in self._chunks(x):
            posterior = self.vae.encode(chunk.to(self.vae.dtype)).latent_dist
            means.append(posterior.mean * self.scaling_factor)
            stds.append(posterior.std * self.scaling_factor)
        return torch.cat(means), (torch.cat(stds) if self.sample_posterior else None)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        self._check_latents(z)
        out = [
            self.vae.decode(chunk.to(self.vae.dtype) / self.scaling_factor).sample
            for chunk in self._chunks(z)
        ]
        return torch.cat(out)


class VAECodec(AutoencoderKLCodec):
    """Frozen diffusers AutoencoderKL, loaded strictly from a local diffusers folder; latents are scaled
    by `scaling_factor` (the folder's config value unless given)."""

    def __init__(
        self,
        path: str | Path,
        scaling_factor: float | None = None,
        sample_posterior: bool = True,
        config_key: str = "model.codec.path",
        slice_size: int | None = None,
    ) -> None:
        super().__init__()
        from diffusers import AutoencoderKL

        vae = load_diffusers_model(AutoencoderKL, path, config_key, VAE_PUBLISHED_AT)
        factor = vae.config.scaling_factor if scaling_factor is None else scaling_factor
        self._adopt(vae, factor, sample_posterior, slice_size)
