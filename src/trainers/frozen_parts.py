"""What the diffusion LightningModules share about their frozen parts: checkpoints without the frozen weights,
parts built only when used, constants of the frozen encoders, and video <-> latents through the frozen codec.

Frozen weights (codec, encoders, and whatever a stage does not train) are not written to Lightning checkpoints:
they are reloaded from their own files when a run is rebuilt. A run from a latent cache defers the codec and
encoders (src.trainers.deferred_parts): `module.codec` builds it on first use, which training never makes.
The sample-independent outputs training reads (the empty caption's embedding, ...) are `frozen_constant`s,
which a cached run takes from the cache. Layout: videos `b c t h w`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from src.trainers.sample_draws import SampleDraws


class FrozenPartsMixin:
    """Mixin for a LightningModule with `stage`, `codec`, `frozen_state_keys()` and `frozen_part_names` (the
    codec and encoders, set with src.trainers.deferred_parts.set_frozen_part: built now, or deferred)."""

    frozen_part_names: tuple[str, ...] = ()

    def __getattr__(self, name: str):
        deferred = self.__dict__.get("_deferred_parts")
        if deferred is not None and name in deferred:
            param = next((p for p in self.parameters() if p.is_floating_point()), None)
            dtype = torch.float32 if param is None else param.dtype  # the dtype the strategy gave the module
            return deferred.get(name, self.device, dtype)
        return super().__getattr__(name)

    def is_deferred(self, name: str) -> bool:
        """True when the part `name` is built on first use (a run from a latent cache) and not yet built."""
        deferred = self.__dict__.get("_deferred_parts")
        return deferred is not None and name in deferred and name not in deferred.built

    def eval_frozen_parts(self) -> None:
        """Keep the registered frozen parts in eval mode (deferred ones are built in eval mode)."""
        for name in self.frozen_part_names:
            part = self._modules.get(name)
            if part is not None:
                part.eval()

    def on_validation_end(self) -> None:
        """Deferred parts built for validation go back to the host until the next validation."""
        deferred = self.__dict__.get("_deferred_parts")
        if deferred is not None:
            deferred.offload()

    def frozen_constant(self, name: str, like: torch.Tensor, compute: Callable[[], torch.Tensor]) -> torch.Tensor:
        """A sample-independent output of a frozen part (e.g. the empty caption's embedding), computed once (or
        taken from a latent cache: `adopt_frozen_constants`) and returned on `like`'s device and dtype."""
        store = self.__dict__.setdefault("_frozen_constants", {})
        value = store.get(name)
        if value is None:
            value = compute().detach()
        if value.device != like.device or value.dtype != like.dtype:
            value = value.to(like)
        store[name] = value
        return value

    def adopt_frozen_constants(self, constants: dict[str, torch.Tensor]) -> None:
        """Use a latent cache's stored constants instead of computing them with the frozen parts."""
        self.__dict__.setdefault("_frozen_constants", {}).update(constants)

    def stored_frozen_constants(self) -> dict[str, torch.Tensor]:
        """The constants computed so far, on the host (what a latent cache stores)."""
        return {k: v.detach().cpu().contiguous() for k, v in self.__dict__.get("_frozen_constants", {}).items()}

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
        # every frozen key this module holds: a checkpoint of a cached run (deferred parts) lists fewer
        current, state = self.state_dict(), checkpoint["state_dict"]
        for key in self.frozen_state_keys():
            if key in current and key not in state:
                state[key] = current[key]

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
