"""What the diffusion LightningModules share about their frozen parts: checkpoints without the frozen weights,
and video <-> latents frame by frame through the frozen codec.

Frozen weights (codec, encoders, and whatever a stage does not train) are not written to Lightning checkpoints:
they are reloaded from their own files when a run is rebuilt. Layout: videos `b c t h w`.
"""

from __future__ import annotations

import torch

from src.trainers.sample_draws import SampleDraws


class FrozenPartsMixin:
    """Mixin for a LightningModule with `stage`, `codec` and `frozen_state_keys()`; keeps the skipped-sample count."""

    _skipped: torch.Tensor | None = None

    @property
    def skipped_samples(self) -> int:
        """Bad samples the loader skipped so far (read on the host: at checkpoints and the end, not per step)."""
        return 0 if self._skipped is None else int(self._skipped)

    @skipped_samples.setter
    def skipped_samples(self, value: int) -> None:
        self._skipped = torch.tensor(int(value), dtype=torch.int64)

    def count_skipped(self, batch: dict) -> torch.Tensor:
        """Add the batch's skipped-sample counts on its device (no host sync per step) and return the total."""
        skipped = batch.get("skipped")
        if skipped is None:
            skipped = torch.zeros((), dtype=torch.int64)
        total = torch.zeros((), dtype=torch.int64) if self._skipped is None else self._skipped
        self._skipped = total.to(skipped.device) + skipped.sum()
        return self._skipped

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """Drop the frozen weights; record which were dropped, the stage and the skipped-sample count."""
        frozen = self.frozen_state_keys()
        state = checkpoint["state_dict"]
        for key in [k for k in state if k in frozen]:
            del state[key]
        checkpoint["frozen_keys_excluded"] = sorted(frozen)
        checkpoint["stage"] = self.stage
        checkpoint["skipped_samples"] = self.skipped_samples

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
        self.skipped_samples = int(checkpoint.get("skipped_samples", 0))

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
        """The training latent: mean + std * a normal keyed on each sample's index (src.trainers.sample_draws),
        or the mean for a deterministic codec; the same whether the moments were just computed or read from a
        latent cache (src.data.cache)."""
        if std is None:
            return mean
        return mean + std * draws.normal(purpose, mean.shape[1:], dtype=mean.dtype)

    @torch.no_grad()
    def encode_video(self, pixels: torch.Tensor) -> torch.Tensor:
        """`b c t h w` pixels in [-1, 1] -> `b c t h w` latents, frame by frame through the codec."""
        b, _, t = pixels.shape[:3]
        latents = self.codec.encode(pixels.permute(0, 2, 1, 3, 4).flatten(0, 1))
        return latents.unflatten(0, (b, t)).permute(0, 2, 1, 3, 4)

    @torch.no_grad()
    def decode_video(self, latents: torch.Tensor) -> torch.Tensor:
        """`b c t h w` latents -> `b c t h w` pixels clamped to [-1, 1]."""
        b, _, t = latents.shape[:3]
        pixels = self.codec.decode(latents.permute(0, 2, 1, 3, 4).flatten(0, 1))
        return pixels.unflatten(0, (b, t)).permute(0, 2, 1, 3, 4).clamp(-1, 1)
