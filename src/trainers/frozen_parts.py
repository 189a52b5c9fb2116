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
    def encode_images(
        self,
        images: torch.Tensor,
        draws: SampleDraws | None = None,
        purpose: str = "image_posterior",
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """`(b k) c h w` images (k per training sample) -> latents. A codec that samples its posterior (the VAEs)
        takes the noise from `draws` under `purpose` in training (each sample's own, whatever rank or batch it
        lands in), from the sampling `generator` at inference (the seed alone fixes the output), else from the
        global RNG."""
        noise = None
        if self.codec.samples_posterior and (draws is not None or generator is not None):
            latent = self.codec.latent_shape(*images.shape[-2:])
            if draws is not None:
                noise = draws.normal(purpose, (images.shape[0] // draws.batch_size, *latent)).flatten(0, 1)
            else:
                noise = torch.randn((images.shape[0], *latent), generator=generator, device=generator.device)
            noise = noise.to(images.device)
        return self.codec.encode(images, noise=noise)

    @torch.no_grad()
    def encode_video(self, pixels: torch.Tensor, draws: SampleDraws | None = None) -> torch.Tensor:
        """`b c t h w` pixels in [-1, 1] -> `b c t h w` latents, frame by frame through the codec (`draws`: the
        training batch's, for the posterior noise; see `encode_images`)."""
        b, _, t = pixels.shape[:3]
        latents = self.encode_images(pixels.permute(0, 2, 1, 3, 4).flatten(0, 1), draws, "video_posterior")
        return latents.unflatten(0, (b, t)).permute(0, 2, 1, 3, 4)

    @torch.no_grad()
    def decode_video(self, latents: torch.Tensor) -> torch.Tensor:
        """`b c t h w` latents -> `b c t h w` pixels clamped to [-1, 1]."""
        b, _, t = latents.shape[:3]
        pixels = self.codec.decode(latents.permute(0, 2, 1, 3, 4).flatten(0, 1))
        return pixels.unflatten(0, (b, t)).permute(0, 2, 1, 3, 4).clamp(-1, 1)
