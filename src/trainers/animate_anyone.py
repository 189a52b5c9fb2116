"""Animate Anyone as a LightningModule: one class for both stages, chosen by `stage`.

Stage "spatial" trains the denoising UNet, the ReferenceNet (minus its never-used tail) and the Pose
Guider on single frames; stage "temporal" adds AnimateDiff motion modules and trains only them.
Frozen parts (latent codec, CLIP image encoder, and in stage 2 everything but the motion modules) are
kept out of the optimizer and out of checkpoints; they come back from their own weights on resume.
Batches follow the data contract: pixel_values/pose `b c t h w`, reference `b c h w`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import lightning as L
import torch
from torch import nn

from src.models.samplers import cfg_combine, ddim_sample
from src.trainers.diffusion import DiffusionLoss, DiffusionObjective, NoiseSchedule
from src.trainers.frozen_parts import FrozenPartsMixin
from src.trainers.lr_schedule import LRSchedule, build_lr_scheduler
from src.trainers.weights_io import load_net_weights

log = logging.getLogger(__name__)

STAGES = ("spatial", "temporal")
# The unconditional input (conditioning dropout in training, the CFG branch in sampling). "ours": per-sample
# dropout, zero CLIP embedding, no reference tokens. "moore": Moore-AnimateAnyone's training convention, one
# draw for the whole batch, CLIP embedding of an all-zero CLIP input, no reference tokens. "auto": "moore" for
# nets loaded from Moore's weights (net.weights_origin), so guidance means what it meant in their training.
UNCOND_MODES = ("auto", "ours", "moore")


@dataclass
class SamplingConfig:
    """DDIM settings used for validation samples and the demo (Moore: 30 steps, CFG 3.5)."""

    num_steps: int = 30
    guidance_scale: float = 3.5
    eta: float = 0.0


class AnimateAnyoneModule(FrozenPartsMixin, L.LightningModule):
    def __init__(
        self,
        net: nn.Module,
        codec: nn.Module,
        image_encoder: nn.Module,
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
        self.codec = codec.requires_grad_(False).eval()
        self.image_encoder = image_encoder.requires_grad_(False).eval()
        self.objective = DiffusionObjective(noise, loss)
        self.noise_schedule = noise
        self.optimizer_factory = optimizer
        self.cond_drop_prob = cond_drop_prob
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
        self.skipped_samples = 0

    # ----------------------------------------------------------------------------------------- frozen parts
    def train(self, mode: bool = True) -> AnimateAnyoneModule:
        """Frozen encoders stay in eval mode whatever Lightning asks."""
        super().train(mode)
        self.codec.eval()
        self.image_encoder.eval()
        return self

    def frozen_state_keys(self) -> set[str]:
        trainable = {id(p) for p in self.net.trainable_parameters()}
        names = set()
        for name, param in self.named_parameters():
            if id(param) not in trainable:
                names.add(name)
        return names

    # ------------------------------------------------------------------------------------------- training
    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        pixels, pose, reference = batch["pixel_values"], batch["pose"], batch["reference"]
        b = pixels.shape[0]
        latents = self.encode_video(pixels)
        with torch.no_grad():
            reference_latents = self.codec.encode(reference)
            clip_embeds = self.image_encoder(reference)
        # Conditioning dropout, matching the unconditional branch at sampling time (see UNCOND_MODES).
        drop, noise, timesteps = self.draw_randomness(latents, batch.get("sample_seed"))
        if self.uncond == "moore":
            drop = drop[:1].expand(b)  # Moore drops the whole batch or none of it
        clip_embeds = torch.where(drop[:, None, None], self.unconditional_clip(b).to(clip_embeds), clip_embeds)
        noisy = self.objective.add_noise(latents, noise, timesteps)
        prediction = self.net(noisy, timesteps, clip_embeds, reference_latents, pose, use_reference=~drop)
        loss = self.objective.loss(prediction, self.objective.target(latents, noise, timesteps), timesteps)

        skipped = int(batch["skipped"].sum()) if "skipped" in batch else 0
        self.skipped_samples += skipped
        self.log("train/loss", loss, prog_bar=True, batch_size=b, sync_dist=True)  # the global batch's loss
        self.log("data/skipped_total", float(self.skipped_samples), batch_size=b)
        return loss

    def draw_randomness(
        self, latents: torch.Tensor, sample_seeds: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Conditioning-dropout mask, noise and timesteps: from the global RNG, or one generator per sample
        when the loader gives "sample_seed" (data.split_global_batch), so any world size draws the same."""
        b, device = latents.shape[0], latents.device
        if sample_seeds is None:
            drop = torch.rand(b, device=device) < self.cond_drop_prob
            return drop, self.objective.sample_noise(latents), self.objective.sample_timesteps(b, device)
        drops, noises, steps = [], [], []
        for i, seed in enumerate(sample_seeds.tolist()):
            g = torch.Generator(device=device).manual_seed(int(seed))
            drops.append(torch.rand(1, device=device, generator=g) < self.cond_drop_prob)
            noises.append(self.objective.sample_noise(latents[i : i + 1], generator=g))
            steps.append(self.objective.sample_timesteps(1, device, generator=g))
        return torch.cat(drops), torch.cat(noises), torch.cat(steps)

    @torch.no_grad()
    def unconditional_clip(self, batch: int) -> torch.Tensor:
        """(batch, 1, D) CLIP input of the unconditional branch: zeros, or Moore's embedding of a zero image."""
        if self.uncond == "moore":
            return self.image_encoder.zero_input_embedding(batch)
        param = next(self.image_encoder.parameters())
        return torch.zeros(batch, 1, self.image_encoder.embed_dim, device=param.device, dtype=param.dtype)

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
    @torch.no_grad()
    def animate(
        self,
        reference: torch.Tensor,
        pose: torch.Tensor,
        num_steps: int | None = None,
        guidance_scale: float | None = None,
        eta: float | None = None,
        generator: torch.Generator | None = None,
        progress: bool = False,
    ) -> torch.Tensor:
        """reference `b c h w` in [-1, 1] + pose `b c t h w` in [0, 1] -> video `b c t h w` in [-1, 1].

        The ReferenceNet runs once for the whole sampling run; the unconditional branch of classifier-free
        guidance gets no reference tokens and the CLIP input of training dropout (`unconditional_clip`).
        """
        num_steps = num_steps or self.sampling.num_steps
        scale = self.sampling.guidance_scale if guidance_scale is None else guidance_scale
        eta = self.sampling.eta if eta is None else eta
        b, _, t, h, w = pose.shape
        reference_latents = self.codec.encode(reference)
        clip_embeds = self.image_encoder(reference)
        use_guidance = scale != 1.0
        if use_guidance:
            clip_in = torch.cat([self.unconditional_clip(b).to(clip_embeds), clip_embeds])
            reference_in = torch.cat([reference_latents, reference_latents])
            use_reference = torch.cat([torch.zeros(b, dtype=torch.bool), torch.ones(b, dtype=torch.bool)])
            pose_in = torch.cat([pose, pose])
        else:
            clip_in, reference_in, pose_in = clip_embeds, reference_latents, pose
            use_reference = torch.ones(b, dtype=torch.bool)
        use_reference = use_reference.to(reference.device)
        self.net.write_reference(reference_in, clip_in, use_reference)
        pose_features = self.net.encode_pose(pose_in)

        def model(x: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
            if not use_guidance:
                return self.net.denoise(x, timesteps, clip_in, pose_features)
            out = self.net.denoise(
                torch.cat([x, x]), torch.cat([timesteps, timesteps]), clip_in, pose_features
            )
            uncond, cond = out.chunk(2)
            return cfg_combine(cond, uncond, scale)

        latent_shape = (b, reference_latents.shape[1], t, *reference_latents.shape[-2:])
        noise = torch.randn(latent_shape, generator=generator, device=reference.device, dtype=reference.dtype)
        try:
            latents = ddim_sample(
                model,
                noise,
                self.noise_schedule.sampling_scheduler(),
                num_steps,
                eta=eta,
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
