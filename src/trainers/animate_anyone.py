"""Animate Anyone as a LightningModule: one class for both stages, chosen by `stage`.

Stage "spatial" trains the denoising UNet, the ReferenceNet (minus its never-used tail) and the Pose
Guider on single frames; stage "temporal" adds AnimateDiff motion modules and trains only them.
Frozen parts (latent codec, CLIP image encoder, and in stage 2 everything but the motion modules) are
kept out of the optimizer and out of checkpoints; they come back from their own weights on resume.
Batches follow the data contract: pixel_values/pose `b c t h w`, reference `b c h w`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import lightning as L
import torch
from torch import nn

from src.models.sampling import ContextWindows, Guidance, SamplingHook, denoise_loop
from src.models.weights_io import load_net_weights
from src.trainers.deferred_parts import set_frozen_part
from src.trainers.diffusion import DiffusionLoss, DiffusionObjective, NoiseSchedule
from src.trainers.frozen_parts import FrozenPartsMixin
from src.trainers.lr_schedule import LRSchedule, build_lr_scheduler
from src.trainers.sample_draws import SampleDraws

log = logging.getLogger(__name__)

STAGES = ("spatial", "temporal")
# The unconditional input (conditioning dropout in training, the CFG branch in sampling). "ours": per-sample
# dropout, zero CLIP embedding, no reference tokens. "moore": Moore-AnimateAnyone's training convention, one
# draw for the whole batch, CLIP embedding of an all-zero CLIP input, no reference tokens. "auto": "moore" for
# nets loaded from Moore's weights (net.weights_origin), so guidance means what it meant in their training.
UNCOND_MODES = ("auto", "ours", "moore")


@dataclass
class SamplingConfig:
    """DDIM settings used for validation samples, the demo and `python -m src.sample` (Moore: 30 steps, CFG 3.5,
    context windows of 24 frames overlapping by 4). `context_frames` None = the whole clip in one window (it must
    then fit the motion modules' positional table); windows apply to the temporal stage only, as spatial-stage
    frames are denoised independently anyway."""

    num_steps: int = 30
    guidance_scale: float = 3.5
    guidance_rescale: float = 0.0
    eta: float = 0.0
    context_frames: int | None = None
    context_overlap: int = 0


class AnimateAnyoneModule(FrozenPartsMixin, L.LightningModule):
    #: batch entries only the frozen parts read: a latent cache stores their features instead (src.data.cache)
    frozen_inputs = ("pixel_values", "reference")
    #: the frozen parts a latent cache replaces (a run from a cache builds them only when used)
    frozen_part_names = ("codec", "image_encoder")

    def __init__(
        self,
        net: nn.Module,
        codec: nn.Module | Callable[[], nn.Module],
        image_encoder: nn.Module | Callable[[], nn.Module],
        noise: NoiseSchedule,
        loss: DiffusionLoss,
        optimizer: Callable[..., torch.optim.Optimizer],
        stage: str = "spatial",
        motion_adapter: Callable[[], nn.Module] | None = None,
        zero_motion_proj_out: str | bool = "fresh",
        motion_norm: str = "per_frame",
        uncond: str = "auto",
        init_weights: str | None = None,
        cond_drop_prob: float = 0.1,
        warmup_steps: int = 0,
        lr_decay: str = "constant",
        min_lr_ratio: float = 0.0,
        sampling: SamplingConfig | dict | None = None,
        gradient_checkpointing: bool = False,
        pose_guider_lr_scale: float = 1.0,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if stage not in STAGES:
            raise ValueError(f"stage={stage!r} is not one of {STAGES}.")
        if not 0.0 <= cond_drop_prob < 1.0:
            raise ValueError(f"model.cond_drop_prob must be in [0, 1), got {cond_drop_prob}.")
        if uncond not in UNCOND_MODES:
            raise ValueError(f"model.uncond={uncond!r} is not one of {UNCOND_MODES}.")
        self.stage = stage
        self.net = net
        if uncond == "auto":
            uncond = "moore" if getattr(net, "weights_origin", None) == "moore" else "ours"
        self.uncond = uncond
        set_frozen_part(self, "codec", codec)
        set_frozen_part(self, "image_encoder", image_encoder)
        self.objective = DiffusionObjective(noise, loss)
        self.noise_schedule = noise
        self.optimizer_factory = optimizer
        self.cond_drop_prob = cond_drop_prob
        self.seed = int(seed)  # keys the training draws (the runner passes the run's `seed`)
        self.lr_schedule = LRSchedule(warmup_steps, lr_decay, min_lr_ratio)
        self.pose_guider_lr_scale = pose_guider_lr_scale
        self.sampling = (
            sampling if isinstance(sampling, SamplingConfig) else SamplingConfig(**(sampling or {}))
        )
        if init_weights:
            load_net_weights(self.net, init_weights)
        if stage == "temporal":
            if motion_adapter is None:
                raise ValueError(
                    "stage=temporal needs model.motion_adapter (a diffusers folder, an AnimateDiff .ckpt, or a "
                    "config to build one); see conf/model/animate_anyone.yaml."
                )
            if self.net.stage != "temporal":
                self.net.enable_temporal(motion_adapter(), zero_proj_out=zero_motion_proj_out, norm=motion_norm)
        self.net.set_trainable(stage)
        if gradient_checkpointing:
            self.net.enable_gradient_checkpointing()

    # ----------------------------------------------------------------------------------------- frozen parts
    def train(self, mode: bool = True) -> AnimateAnyoneModule:
        """Frozen encoders stay in eval mode whatever Lightning asks."""
        super().train(mode)
        self.eval_frozen_parts()
        return self

    def frozen_state_keys(self) -> set[str]:
        trainable = {id(p) for p in self.net.trainable_parameters()}
        names = set()
        for name, param in self.named_parameters():
            if id(param) not in trainable:
                names.add(name)
        return names

    def frozen_constants(self, frame_size: tuple[int, int]) -> dict[str, torch.Tensor]:
        """The frozen parts' sample-independent outputs that training reads, on the host (a latent cache stores
        them): Moore's unconditional CLIP embedding (stored whatever `uncond` is: `uncond` is not in the key)."""
        self.zero_input_clip(torch.zeros((), device=self.device))
        return self.stored_frozen_constants()

    def zero_input_clip(self, like: torch.Tensor) -> torch.Tensor:
        """(1, 1, D) CLIP embedding of an all-zero CLIP input (a frozen constant)."""
        return self.frozen_constant("zero_input_clip", like, lambda: self.image_encoder.zero_input_embedding(1))

    # ------------------------------------------------------------------------------------------- training
    @torch.no_grad()
    def frozen_features(self, batch: dict) -> dict[str, torch.Tensor]:
        """What the frozen codec and CLIP encoder make of a batch, per sample and without randomness: the latent
        posteriors' moments of the targets and the reference, and the reference's CLIP embedding. A latent
        cache (`python -m src.data.cache`) stores exactly these, so a cached batch trains like a raw one."""
        mean, std = self.encode_video_moments(batch["pixel_values"])
        reference_mean, reference_std = self.codec.encode_moments(batch["reference"])
        features = {"latent_mean": mean, "reference_mean": reference_mean}
        if std is not None:
            features.update(latent_std=std, reference_std=reference_std)
        features["clip_embeds"] = self.image_encoder(batch["reference"])
        return features

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        pose = batch["pose"]
        features = batch if "latent_mean" in batch else self.frozen_features(batch)  # cached or computed now
        b = pose.shape[0]
        draws = SampleDraws.for_batch(self.seed, batch, b)
        latents = self.posterior_latents(
            features["latent_mean"], features.get("latent_std"), draws, "video_posterior"
        )
        reference_latents = self.posterior_latents(
            features["reference_mean"], features.get("reference_std"), draws, "reference_posterior"
        )
        clip_embeds = features["clip_embeds"]
        # Conditioning dropout, matching the unconditional branch at sampling time (see UNCOND_MODES).
        drop, noise, timesteps = self.draw_randomness(latents, batch)
        if self.uncond == "moore":
            drop = drop[:1].expand(b)  # Moore drops the whole batch or none of it
        clip_embeds = torch.where(drop[:, None, None], self.unconditional_clip(b, clip_embeds), clip_embeds)
        noisy = self.objective.add_noise(latents, noise, timesteps)
        use_reference = ~drop if self.cond_drop_prob > 0 else None  # None: no mask, the fused attention kernels
        prediction = self.net(noisy, timesteps, clip_embeds, reference_latents, pose, use_reference=use_reference)
        loss = self.objective.loss(prediction, self.objective.target(latents, noise, timesteps), timesteps)

        # a tensor, not a number: Lightning reads it on the host only at its logging intervals
        self.log("train/loss", loss, prog_bar=True, batch_size=b, sync_dist=True)  # the global batch's loss
        return loss

    def draw_randomness(
        self, latents: torch.Tensor, batch: dict
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Conditioning-dropout mask, noise and timesteps, each sample's own: keyed on (`seed`, its global
        "sample_index", purpose) by src.trainers.sample_draws, so ranks never repeat draws, any world size
        draws the same per sample, and a resumed run draws what the uninterrupted one would have."""
        draws = SampleDraws.for_batch(self.seed, batch, latents.shape[0])
        draws.reseed_global_rng()  # for any dropout layer inside the networks
        drop = draws.uniform("conditioning_dropout") < self.cond_drop_prob
        return drop, self.objective.sample_noise(latents, draws), self.objective.sample_timesteps(draws)

    @torch.no_grad()
    def unconditional_clip(self, batch: int, like: torch.Tensor) -> torch.Tensor:
        """(batch, 1, D) CLIP input of the unconditional branch on `like`'s device and dtype (`like`: CLIP
        embeddings, or any tensor when computing the constant): zeros, or Moore's embedding of a zero image (a
        frozen constant: computed once, or read from a latent cache)."""
        if self.uncond == "moore":
            zero = self.zero_input_clip(like)
            return zero.expand(batch, *zero.shape[1:])
        if like.ndim == 3:
            return torch.zeros(batch, *like.shape[1:], device=like.device, dtype=like.dtype)
        return torch.zeros(batch, 1, self.image_encoder.embed_dim, device=like.device, dtype=like.dtype)

    def parameter_groups(self) -> list[dict]:
        """Trainable parameters; the Pose Guider in its own group when it gets a learning-rate multiplier
        (its zero-initialised output projection otherwise learns slowly: Open-AnimateAnyone scales it by a
        learnable factor starting at 2, Moore starts it from ControlNet's conditioning embedding)."""
        params = self.net.trainable_parameters()
        if not params:
            raise RuntimeError(f"stage {self.stage!r} has no trainable parameters; check model config.")
        guider = {id(p) for p in self.net.pose_guider.parameters()}
        if self.pose_guider_lr_scale == 1.0 or not any(id(p) in guider for p in params):
            return [{"params": params}]
        return [
            {"params": [p for p in params if id(p) not in guider]},
            {"params": [p for p in params if id(p) in guider], "lr_scale": self.pose_guider_lr_scale},
        ]

    def configure_optimizers(self):
        optimizer = self.optimizer_factory(self.parameter_groups())
        for group in optimizer.param_groups:
            group["lr"] = group["lr"] * group.get("lr_scale", 1.0)
        scheduler = build_lr_scheduler(optimizer, self.lr_schedule, lambda: self.trainer.estimated_stepping_batches)
        return optimizer if scheduler is None else {"optimizer": optimizer, "lr_scheduler": scheduler}

    # ------------------------------------------------------------------------------------------- sampling
    def sampling_config(self, **overrides) -> SamplingConfig:
        """The module's sampling settings with `overrides`; None keeps the module's setting, except for
        `context_frames`, where None means one pass over the whole clip."""
        known = set(SamplingConfig.__dataclass_fields__)
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ValueError(f"AnimateAnyone.animate: unknown sampling settings {unknown}; known: {sorted(known)}.")
        kept = {k: v for k, v in overrides.items() if v is not None or k == "context_frames"}
        return replace(self.sampling, **kept)

    def context_windows(self, cfg: SamplingConfig, num_frames: int) -> ContextWindows | None:
        """The windows for a clip of `num_frames` (None: one pass over the whole clip)."""
        if self.net.stage != "temporal" or cfg.context_frames is None:
            return None
        limit = self.net.denoising_unet.config.motion_max_seq_length
        if cfg.context_frames > limit:
            raise ValueError(
                f"sample.context_frames={cfg.context_frames} exceeds the motion modules' motion_max_seq_length="
                f"{limit}; use windows of at most {limit} frames (the training clip length is best)."
            )
        return ContextWindows(cfg.context_frames, cfg.context_overlap)

    @torch.no_grad()
    def animate(
        self,
        reference: torch.Tensor,
        pose: torch.Tensor,
        generator: torch.Generator | None = None,
        progress: bool = False,
        hooks: Sequence[SamplingHook] = (),
        **overrides,
    ) -> torch.Tensor:
        """reference `b c h w` in [-1, 1] + pose `b c t h w` in [0, 1] -> video `b c t h w` in [-1, 1].

        `overrides` are SamplingConfig fields (num_steps, guidance_scale, guidance_rescale, eta, context_frames,
        context_overlap). The ReferenceNet runs once for the whole run (every step and every context window
        reads its bank); pose features are computed once and sliced per window. The unconditional branch of
        classifier-free guidance gets no reference tokens and the CLIP input of training dropout
        (`unconditional_clip`).
        """
        cfg = self.sampling_config(**overrides)
        b, _, t, h, w = pose.shape
        reference_latents = self.encode_images(reference, generator=generator)
        clip_embeds = self.image_encoder(reference)
        guidance = Guidance(cfg.guidance_scale, rescale=cfg.guidance_rescale)
        k = len(guidance.branches)  # cond (+ uncond)
        clip_in = torch.cat([clip_embeds, self.unconditional_clip(b, clip_embeds)][:k])
        use_reference = torch.cat([torch.ones(b, dtype=torch.bool), torch.zeros(b, dtype=torch.bool)][:k])
        use_reference = use_reference.to(reference.device) if k > 1 else None  # one branch: all see the reference
        self.net.write_reference(reference_latents.repeat(k, 1, 1, 1), clip_in, use_reference)
        pose_features = self.net.encode_pose(pose.repeat(k, 1, 1, 1, 1))

        def model(x: torch.Tensor, timesteps: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
            features = pose_features if frames.numel() == t else pose_features[:, :, frames.to(x.device)]
            return self.net.denoise(x, timesteps, clip_in, features)

        latent_shape = (b, reference_latents.shape[1], t, *reference_latents.shape[-2:])
        noise = torch.randn(latent_shape, generator=generator, device=reference.device, dtype=reference.dtype)
        try:
            latents = denoise_loop(
                model,
                noise,
                self.noise_schedule.ddim(cfg.num_steps, cfg.eta),
                guidance,
                self.context_windows(cfg, t),
                hooks=hooks,
                generator=generator,
                progress=progress,
            )
        finally:
            self.net.clear_reference()
        return self.decode_video(latents)

    # ----------------------------------------------------------------------------------------- validation
    def validation_step(self, batch: dict, batch_idx: int) -> None:
        generator = torch.Generator(device=batch["reference"].device).manual_seed(batch_idx)
        video = self.animate(batch["reference"], batch["pose"], generator=generator)
        target = batch["frames"]
        from src.eval.animation_scores import video_psnr, video_ssim

        self.log("val/psnr", video_psnr(video, target).mean(), batch_size=video.shape[0], sync_dist=True)
        self.log("val/ssim", video_ssim(video, target).mean(), batch_size=video.shape[0], sync_dist=True)
        self.last_validation_videos = {"generated": video, "batch": batch}
