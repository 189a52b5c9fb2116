"""What the diffusion LightningModules share about their frozen parts: checkpoints without the frozen weights,
and video <-> latents frame by frame through the frozen codec.

Frozen weights (codec, encoders, and whatever a stage does not train) are not written to Lightning checkpoints:
they are reloaded from their own files when a run is rebuilt. Layout: videos `b c t h w`.
"""

from __future__ import annotations

import torch

from src.trainers.sample_draws import SampleDraws


class FrozenPartsMixin:
    """Mixin for a LightningModule with `stage`, `codec` and `frozen_state_keys()`."""

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """Drop the frozen weights; record which were dropped and the stage."""
        frozen = self.frozen_state_keys()
        state = checkpoint["state_dict"]
        for key in [k for k in state if k in frozen]:
            del state[key]
        checkpoint["frozen_keys_excluded"] = sorted(frozen)
        checkpoint["stage"] = self.stage

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """Put the frozen weights (already loaded at construction) back so the strict load checks the rest."""
        if checkpoint.get("stage", self.stage) != self.stage:
            raise ValueError(
                f"checkpoint is from stage {checkpoint['stage']!r} but this run is stage {self.stage!r}; "
                "point the stage at its own checkpoint directory."
            )
        current = self.state_dict()
        for key in checkpoint.get("frozen_keys_excluded", []):
            if key in current:
                checkpoint["state_dict"][key] = current[key]

    @torch.no_grad()
    def encode_video_moments(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """`b c t h w` pixels -> the latent posterior's (mean, std), each `b c t h w` (std None: deterministic)."""
        b, _, t = pixels.shape[:3]
        mean, std = self.codec.encode_moments(pixels.permute(0, 2, 1, 3, 4).flatten(0, 1))
        unflat = lambda x: None if x is None else x.unflatten(0, (b, t)).permute(0, 2, 1, 3, 4)  # noqa: E731
        return unflat(mean), unflat(std)

    @staticmethod
    def posterior_latents(
        mean: torch.Tensor, std: torch.Tensor | None, draws: SampleDraws, purpose: str
    ) -> torch.Tensor:
        """The training latent: mean + std * each sample's own normal under `purpose`
        (src.trainers.sample_draws), or the mean for a deterministic codec. The one way training samples a
        posterior, whether the moments were just computed or read from a latent cache (src.data.cache).
        `mean`: `b C h w` (an image per sample) or `b c t h w` (a video; its noise is drawn frame by frame,
        `t c h w`, as the frames are encoded)."""
        if std is None:
            return mean
        if mean.ndim == 5:
            _, c, t, h, w = mean.shape
            noise = draws.normal(purpose, (t, c, h, w), dtype=mean.dtype).permute(0, 2, 1, 3, 4)
        else:
            noise = draws.normal(purpose, mean.shape[1:], dtype=mean.dtype)
        return mean + std * noise.to(mean.device)

    @torch.no_grad()
    def encode_images(
        self,
        images: torch.Tensor,
        draws: SampleDraws | None = None,
        purpose: str = "image_posterior",
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """`b c h w` images -> latents. A codec that samples its posterior (the VAEs) takes the noise from
        `draws` under `purpose` in training (one image per training sample: each sample's own noise, whatever
        rank or batch it lands in; see `posterior_latents`), from the sampling `generator` at inference (the
        seed alone fixes the output), else from the global RNG."""
        if draws is not None:
            if images.shape[0] != draws.batch_size:
                raise ValueError(
                    f"encode_images with draws takes one image per training sample: {images.shape[0]} images "
                    f"for {draws.batch_size} samples."
                )
            return self.posterior_latents(*self.codec.encode_moments(images), draws, purpose)
        noise = None
        if generator is not None and self.codec.samples_posterior:
            latent = self.codec.latent_shape(*images.shape[-2:])
            noise = torch.randn((images.shape[0], *latent), generator=generator, device=generator.device)
        return self.codec.encode(images, noise=noise)

    @torch.no_grad()
    def encode_video(self, pixels: torch.Tensor, draws: SampleDraws | None = None) -> torch.Tensor:
        """`b c t h w` pixels in [-1, 1] -> `b c t h w` latents, frame by frame through the codec (`draws`: the
        training batch's, for the posterior noise under "video_posterior"; see `posterior_latents`)."""
        if draws is not None:
            return self.posterior_latents(*self.encode_video_moments(pixels), draws, "video_posterior")
        b, _, t = pixels.shape[:3]
        latents = self.codec.encode(pixels.permute(0, 2, 1, 3, 4).flatten(0, 1))
        return latents.unflatten(0, (b, t)).permute(0, 2, 1, 3, 4)

    @torch.no_grad()
    def decode_video(self, latents: torch.Tensor) -> torch.Tensor:
        """`b c t h w` latents -> `b c t h w` pixels clamped to [-1, 1]."""
        b, _, t = latents.shape[:3]
        pixels = self.codec.decode(latents.permute(0, 2, 1, 3, 4).flatten(0, 1))
        return pixels.unflatten(0, (b, t)).permute(0, 2, 1, 3, 4).clamp(-1, 1)
