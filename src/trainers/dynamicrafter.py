"""DynamiCrafter fine-tuning as a LightningModule (one stage, ``finetune``), sampling included.

Starts from a released ``model.ckpt`` (``model.checkpoint``), loaded strictly: UNet + query transformer into
``.net`` (trained and saved), the VAE, both OpenCLIP towers and the schedule buffers (checked against
``model.noise``) into the frozen parts, which stay out of the optimizer and out of Lightning checkpoints.
Training step as the release: per-frame VAE latents; a condition frame drawn at random from the clip (per
sample) feeds CLIP and the concatenated latent; one uniform draw per sample drops the text (r < 2p), the image
(p <= r < 3p, a zero image fed to CLIP), i.e. 5% text only / 5% both / 5% image only for p = 0.05, and never
the concatenated latent; frame-stride ("fs") or fps conditioning; dynamic latent rescale; plain MSE.
Batches (src.data.caption_video_dataset): video ``b c t h w`` in [-1, 1], caption, frame_stride, fps, key, skipped.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields, replace
from functools import partial
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn

from src.config import to_plain
from src.models.dynamicrafter.checkpoint import (
    IMAGE_ENCODER_PREFIX,
    IMAGE_PROJ_PREFIX,
    PUBLISHED_AT,
    ROOT_PREFIX,
    TEXT_ENCODER_PREFIX,
    UNET_PREFIX,
    VAE_PREFIX,
    convert_diffusers_vae_state_dict_to_ldm,
    load_official_checkpoint,
    load_state_dict_strict,
    split_official_state_dict,
)
from src.models.dynamicrafter.net import DynamiCrafterNet
from src.models.dynamicrafter.schedule import DynamiCrafterSchedule
from src.models.keyed_dropout import bind_dropout_draws
from src.models.sampling import Guidance, SamplingHook, denoise_loop
from src.models.weights import require_file
from src.models.weights_io import load_net_weights
from src.trainers.deferred_parts import set_frozen_part
from src.trainers.frozen_parts import FrozenPartsMixin
from src.trainers.lr_schedule import LRSchedule, build_lr_scheduler
from src.trainers.sample_draws import SampleDraws

log = logging.getLogger(__name__)

STAGES = ("finetune",)
FS_CONDITIONS = ("fs", "fps", None)


@dataclass
class TrainingDraws:
    """One training batch's random draws, row i sample i's own (src.trainers.sample_draws)."""

    drop_text: torch.Tensor  # (b,) bool: empty caption
    drop_image: torch.Tensor  # (b,) bool: zero image into CLIP
    condition_frame: torch.Tensor  # (b,) int64 in [0, t)
    timesteps: torch.Tensor  # (b,) int64
    noise: torch.Tensor  # like the latents, (b, c, t, h, w)


@dataclass
class DynamiCrafterSampling:
    """DDIM settings (the release: 50 steps, eta 1, CFG 7.5; rescale 0.7 and trailing spacing for 512/1024).

    ``image_guidance_scale`` None = one joint scale (``guidance_scale``); a number = separate scales, with
    ``guidance_scale`` the text scale (the release's ``--multiple_cond_cfg --cfg_img``).
    ``timestep_spacing`` None = the schedule's (``uniform`` 256, ``uniform_trailing`` 512/1024).
    """

    num_steps: int = 50
    eta: float = 1.0
    guidance_scale: float = 7.5
    image_guidance_scale: float | None = None
    guidance_rescale: float = 0.0
    timestep_spacing: str | None = None


class DynamiCrafterModule(FrozenPartsMixin, L.LightningModule):
    #: batch entries only the frozen parts read: a latent cache stores their features instead (src.data.cache)
    frozen_inputs = ("video",)
    #: the frozen parts a latent cache replaces (a run from a cache builds them only when used)
    frozen_part_names = ("codec", "image_encoder", "text_encoder")
    #: model-level settings whose files fill those parts (the released checkpoint holds all three)
    frozen_part_sources = ("checkpoint",)

    def __init__(
        self,
        net: DynamiCrafterNet,
        text_encoder: nn.Module | Callable[[], nn.Module],
        image_encoder: nn.Module | Callable[[], nn.Module],
        codec: nn.Module | Callable[[], nn.Module],
        noise: DynamiCrafterSchedule,
        optimizer: Callable[..., torch.optim.Optimizer],
        stage: str = "finetune",
        init_weights: str | None = None,
        checkpoint: str | None = None,
        allow_pickle: bool = False,
        freeze_temporal: bool = False,
        uncond_prob: float = 0.05,
        rand_cond_frame: bool = True,
        fs_condition: str | None = "fs",
        gradient_checkpointing: bool = True,
        warmup_steps: int = 0,
        lr_decay: str = "constant",
        min_lr_ratio: float = 0.0,
        sampling: DynamiCrafterSampling | Mapping[str, Any] | None = None,
        seed: int = 0,
        dropout_masks: str = "keyed",
    ) -> None:
        super().__init__()
        if stage not in STAGES:
            raise ValueError(f"stage={stage!r}: DynamiCrafter experiments have one stage, {STAGES[0]!r}.")
        if not 0.0 <= uncond_prob <= 1.0 / 3.0:
            raise ValueError(
                f"model.uncond_prob must be in [0, 1/3] (three disjoint 'p' bands), got {uncond_prob}."
            )
        if fs_condition not in FS_CONDITIONS:
            raise ValueError(f"model.fs_condition={fs_condition!r} is not one of {FS_CONDITIONS}.")
        self.stage = stage
        self.net = net
        set_frozen_part(self, "text_encoder", text_encoder)
        set_frozen_part(self, "image_encoder", image_encoder)
        set_frozen_part(self, "codec", codec)
        self.schedule = noise
        self.optimizer_factory = optimizer
        self.uncond_prob = uncond_prob
        self.seed = int(seed)  # keys the training draws (the runner passes the run's `seed`)
        self.dropout_masks = dropout_masks
        bind_dropout_draws(self.net, None, dropout_masks)  # checks the value early
        self.rand_cond_frame = rand_cond_frame
        self.fs_condition = fs_condition
        self.freeze_temporal = freeze_temporal
        self.lr_schedule = LRSchedule(warmup_steps, lr_decay, min_lr_ratio)
        sampling = to_plain(sampling)
        self.sampling = (
            sampling
            if isinstance(sampling, DynamiCrafterSampling)
            else DynamiCrafterSampling(**(sampling or {}))
        )
        self.checkpoint_path = checkpoint
        if checkpoint:
            self.load_official(checkpoint, allow_pickle=allow_pickle)
        if init_weights:
            load_net_weights(self.net, init_weights)
        self.net.set_trainable(freeze_temporal=freeze_temporal)
        self.net.set_gradient_checkpointing(gradient_checkpointing)
        self.last_validation_videos: dict | None = None

    # ------------------------------------------------------------------------------------- official weights
    def _official_targets(self) -> dict[str, nn.Module | str | None]:
        """Which module takes each part of an official checkpoint (None: this config has no such module; a
        part's name: deferred, it takes its share when built)."""
        frozen = {VAE_PREFIX: "codec", TEXT_ENCODER_PREFIX: "text_encoder", IMAGE_ENCODER_PREFIX: "image_encoder"}
        targets: dict[str, nn.Module | str | None] = {UNET_PREFIX: self.net.unet, IMAGE_PROJ_PREFIX: self.net.image_proj}
        for prefix, name in frozen.items():
            if self.is_deferred(name):
                targets[prefix] = name
            else:
                part = getattr(self, name)
                targets[prefix] = part if hasattr(part, "load_official") else None
        return targets

    def load_official(self, path: str | Path, allow_pickle: bool = False) -> None:
        """Strictly load a released ``model.ckpt``: every key goes somewhere, every module gets all its keys.
        A deferred part (a run from a latent cache) reads its share of the file when it is built."""
        path = require_file(path, "model.checkpoint", PUBLISHED_AT)
        parts = split_official_state_dict(load_official_checkpoint(path, allow_pickle=allow_pickle))
        for prefix, module in self._official_targets().items():
            part = parts[prefix]
            source = f"{path} ({prefix}*)"
            if isinstance(module, str):
                self._deferred_parts.wrap(module, partial(self._load_deferred_official, path, allow_pickle, prefix))
                continue
            if module is None:
                if part:
                    raise ValueError(
                        f"{source}: the checkpoint holds {len(part)} '{prefix}' tensors but this model config has no "
                        "module for them (a tiny/demo codec or encoder?). Use the model config of the checkpoint's "
                        "release (conf/model/dynamicrafter_256|512|1024.yaml)."
                    )
                continue
            if prefix in (UNET_PREFIX, IMAGE_PROJ_PREFIX):
                load_state_dict_strict(module, part, source)
            else:
                module.load_official(part, source)
        self.schedule.check_official_root_buffers(parts[ROOT_PREFIX], f"{path} (root buffers)")
        log.info("loaded the official DynamiCrafter checkpoint %s", path)

    @staticmethod
    def _load_deferred_official(path: Path, allow_pickle: bool, prefix: str, module: nn.Module) -> None:
        """A deferred frozen part's share of the released checkpoint, loaded strictly when the part is built."""
        if not hasattr(module, "load_official"):
            raise ValueError(
                f"{path} holds '{prefix}' tensors but model config's module for them cannot load them (a tiny/demo "
                "codec or encoder?). Use the model config of the checkpoint's release."
            )
        part = split_official_state_dict(load_official_checkpoint(path, allow_pickle=allow_pickle))[prefix]
        module.load_official(part, f"{path} ({prefix}*)")

    def official_state_dict(self) -> dict[str, torch.Tensor]:
        """This model in the release's flat key layout (what :meth:`load_official` reads back strictly)."""
        out: dict[str, torch.Tensor] = {}
        for prefix, module in self._official_targets().items():
            if module is None:
                continue
            state = module.state_dict()
            if prefix == VAE_PREFIX:
                state = convert_diffusers_vae_state_dict_to_ldm(module.vae.state_dict())
            out.update({prefix + k: v for k, v in state.items()})
        out.update(self.schedule.official_root_buffers())
        return out

    # ----------------------------------------------------------------------------------------- frozen parts
    def train(self, mode: bool = True) -> DynamiCrafterModule:
        """Frozen encoders and codec stay in eval mode whatever Lightning asks."""
        super().train(mode)
        self.eval_frozen_parts()
        return self

    def frozen_constants(self, frame_size: tuple[int, int]) -> dict[str, torch.Tensor]:
        """The frozen parts' sample-independent outputs that training reads, on the host (a latent cache stores
        them): the empty caption's embedding and the image tokens of a zero frame of `frame_size`."""
        like = torch.zeros((), device=self.device)
        self.empty_text_embedding(like)
        self.zero_image_embedding(like, tuple(d // self.codec.downsample for d in frame_size))
        return self.stored_frozen_constants()

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.net.parameters() if p.requires_grad]

    def frozen_state_keys(self) -> set[str]:
        """State-dict keys not trained here: encoders, codec, and (with freeze_temporal) the temporal layers."""
        trainable = {f"net.{name}" for name, p in self.net.named_parameters() if p.requires_grad}
        return {key for key in self.state_dict() if key not in trainable}

    # -------------------------------------------------------------------------------------- conditioning
    def conditioning_dropout(self, draws: SampleDraws) -> tuple[torch.Tensor, torch.Tensor]:
        """(drop_text, drop_image) bool masks from one uniform draw r per sample: text if r < 2p, image if p <= r < 3p."""
        r = draws.uniform("conditioning_dropout")
        p = self.uncond_prob
        return r < 2 * p, (r >= p) & (r < 3 * p)

    def condition_frame_indices(self, draws: SampleDraws, num_frames: int) -> torch.Tensor:
        """Per-sample condition frame: uniform in [0, t) with rand_cond_frame, else frame 0."""
        if not self.rand_cond_frame:
            return torch.zeros(draws.batch_size, dtype=torch.long, device=draws.device)
        return draws.integers("condition_frame", num_frames)

    def draw_randomness(self, batch: dict, latents: torch.Tensor) -> TrainingDraws:
        """Everything random in a training step, each sample's own: keyed on (`seed`, its global "sample_index",
        purpose) by src.trainers.sample_draws, so ranks never repeat draws, any world size draws the same per
        sample, and a resumed run draws what the uninterrupted one would have."""
        draws = SampleDraws.for_batch(self.seed, batch, latents.shape[0])
        draws.reseed_global_rng()  # safety net for any layer that still draws from the global RNG
        bind_dropout_draws(self.net, draws, self.dropout_masks)  # the UNet's KeyedDropout layers (p = 0.1 in the release)
        drop_text, drop_image = self.conditioning_dropout(draws)
        return TrainingDraws(
            drop_text=drop_text,
            drop_image=drop_image,
            condition_frame=self.condition_frame_indices(draws, latents.shape[2]),
            timesteps=self.schedule.sample_timesteps(draws),
            noise=draws.normal("noise", latents.shape[1:], dtype=latents.dtype),
        )

    def fs_values(
        self,
        batch_size: int,
        device: torch.device,
        frame_stride: torch.Tensor | int | None = None,
        fps: torch.Tensor | float | None = None,
    ) -> torch.Tensor | None:
        """The UNet's ``fs``: frame stride (256) or integer fps (512/1024, ``fps // 1`` as the release); None ->
        the UNet's default_fs."""
        value = {"fs": frame_stride, "fps": fps, None: None}[self.fs_condition]
        if value is None or not self.net.unet.fs_condition:
            return None
        value = torch.as_tensor(value, device=device)
        value = torch.floor(value).long() if value.is_floating_point() else value.long()
        return value.expand(batch_size) if value.ndim == 0 else value

    @torch.no_grad()
    def encode_text(self, captions: Sequence[str]) -> torch.Tensor:
        return self.text_encoder(list(captions))

    @torch.no_grad()
    def empty_text_embedding(self, like: torch.Tensor) -> torch.Tensor:
        """The frozen text encoder's embedding of "" (1, L, D), the dropped-text condition: a frozen constant
        (computed once, or read from a latent cache), so text dropout needs no host decision per sample."""
        return self.frozen_constant("empty_text", like, lambda: self.encode_text([""]))

    @torch.no_grad()
    def zero_image_embedding(self, like: torch.Tensor, latent_size: tuple[int, int]) -> torch.Tensor:
        """The image tokens (1, N, D) of an all-zero frame whose latent is `latent_size`, the dropped-image
        condition: a frozen constant per size (computed once, or read from a latent cache)."""

        def compute() -> torch.Tensor:
            size = tuple(d * self.codec.downsample for d in latent_size)
            return self.encode_image(torch.zeros(1, 3, *size, device=like.device, dtype=like.dtype))

        return self.frozen_constant(f"zero_image@{latent_size[0]}x{latent_size[1]}", like, compute)

    @torch.no_grad()
    def frozen_features(self, batch: dict) -> dict[str, torch.Tensor]:
        """What the frozen codec and encoders make of a batch, per sample and without randomness (what a latent
        cache stores): latent posterior moments, the caption's text embedding and every frame's image tokens
        `(b, t, N, D)` (the condition frame is drawn per training step)."""
        video = batch["video"]
        mean, std = self.encode_video_moments(video)
        features = {"latent_mean": mean} if std is None else {"latent_mean": mean, "latent_std": std}
        features["text_embeds"] = self.encode_text(list(batch["caption"]))
        frames = video.permute(0, 2, 1, 3, 4).flatten(0, 1)  # (b t) c h w
        features["image_tokens"] = self.encode_image(frames).unflatten(0, video.shape[:1] + video.shape[2:3])
        return features

    @torch.no_grad()
    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        return self.image_encoder(images)

    def _check_frames(self, num_frames: int) -> None:
        expected = self.net.num_frames
        if expected is not None and num_frames != expected:
            raise ValueError(
                f"DynamiCrafter: got {num_frames} frames but the model's query transformer has per-frame queries for "
                f"{expected} frames (model.net.image_proj.video_length); set data.num_frames={expected}."
            )

    # ------------------------------------------------------------------------------------------ training
    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        # a latent cache (python -m src.data.cache) holds the moments, caption embeddings and every frame's image
        # tokens; otherwise the frozen codec and encoders compute them now
        cached = "latent_mean" in batch
        mean, std = (batch["latent_mean"], batch.get("latent_std")) if cached else self.encode_video_moments(batch["video"])
        b, _, t = mean.shape[:3]
        self._check_frames(t)
        draws = SampleDraws.for_batch(self.seed, batch, b)
        latents = self.posterior_latents(mean, std, draws, "video_posterior")
        drawn = self.draw_randomness(batch, latents)
        index, timesteps = drawn.condition_frame, drawn.timesteps
        rows = torch.arange(b, device=latents.device)
        # dropout on the device: the embeddings of "" and of a zero image (each computed once) replace dropped rows
        text = batch["text_embeds"] if cached else self.encode_text(list(batch["caption"]))
        text = torch.where(drawn.drop_text[:, None, None], self.empty_text_embedding(text), text)
        image = batch["image_tokens"][rows, index] if cached else self.encode_image(batch["video"][rows, :, index])
        zero_image = self.zero_image_embedding(image, tuple(latents.shape[-2:]))
        image = torch.where(drawn.drop_image[:, None, None], zero_image, image)
        context = self.net.context(text, image)
        concat = latents[rows, :, index][:, :, None].expand_as(latents)

        clean = self.schedule.rescale_latents(latents, timesteps)
        noise = drawn.noise
        noisy = self.schedule.add_noise(clean, noise, timesteps)
        fs = self.fs_values(b, latents.device, batch.get("frame_stride"), batch.get("fps"))
        prediction = self.net(noisy, timesteps, concat, context, fs)
        loss = F.mse_loss(prediction.float(), self.schedule.target(clean, noise, timesteps).float())

        # a tensor, not a number: Lightning reads it on the host only at its logging intervals
        self.log("train/loss", loss, prog_bar=True, batch_size=b, sync_dist=True)  # the global batch's loss
        return loss

    def configure_optimizers(self):
        params = self.trainable_parameters()
        if not params:
            raise RuntimeError(
                "DynamiCrafter: no trainable parameters; check model.freeze_temporal and model.net."
            )
        optimizer = self.optimizer_factory(params)
        scheduler = build_lr_scheduler(optimizer, self.lr_schedule, lambda: self.trainer.estimated_stepping_batches)
        return optimizer if scheduler is None else {"optimizer": optimizer, "lr_scheduler": scheduler}

    # ------------------------------------------------------------------------------------------ sampling
    def sampling_config(self, **overrides: Any) -> DynamiCrafterSampling:
        known = {f.name for f in fields(DynamiCrafterSampling)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ValueError(
                f"DynamiCrafter.sample: unknown sampling settings {unknown}; known: {sorted(known)}."
            )
        return replace(self.sampling, **overrides)

    @torch.no_grad()
    def sample(
        self,
        image: torch.Tensor,
        captions: Sequence[str],
        num_frames: int | None = None,
        frame_stride: torch.Tensor | int | None = None,
        fps: torch.Tensor | float | None = None,
        generator: torch.Generator | None = None,
        progress: bool = False,
        hooks: Sequence[SamplingHook] = (),
        **overrides: Any,
    ) -> torch.Tensor:
        """image ``(b, c, h, w)`` in [-1, 1] + captions -> video ``(b, c, t, h, w)`` in [-1, 1] conditioned on it.

        The unconditional branch is empty text + CLIP of a zero image + the same concatenated latent; `hooks`
        edit latents / x0 per step (src.models.sampling.hooks).
        """
        cfg = self.sampling_config(**overrides)
        if image.ndim != 4:
            raise ValueError(
                f"DynamiCrafter.sample: image must be (b, c, h, w) in [-1, 1], got {tuple(image.shape)}."
            )
        b = image.shape[0]
        if isinstance(captions, str) or len(captions) != b:
            raise ValueError(
                f"DynamiCrafter.sample: need a list of {b} captions (one per image), got {captions!r:.200}."
            )
        num_frames = num_frames or self.net.num_frames
        if num_frames is None:
            raise ValueError("DynamiCrafter.sample: pass num_frames (the model does not fix a video length).")
        self._check_frames(num_frames)
        latent = self.encode_images(image, generator=generator)
        concat = latent[:, :, None].expand(-1, -1, num_frames, -1, -1)
        guidance = Guidance(cfg.guidance_scale, cfg.image_guidance_scale, cfg.guidance_rescale)
        text, image_tokens = self.encode_text(captions), self.encode_image(image)
        contexts = [self.net.context(text, image_tokens)]  # in guidance.branches order: cond, image, uncond
        if len(guidance.branches) > 1:
            empty = self.encode_text([""] * b)
            if "image" in guidance.branches:
                contexts.append(self.net.context(empty, image_tokens))
            contexts.append(self.net.context(empty, self.encode_image(torch.zeros_like(image))))
        k = len(contexts)
        context = torch.cat(contexts)
        concat_k = concat.repeat(k, 1, 1, 1, 1)
        fs = self.fs_values(b, image.device, frame_stride, fps)
        fs_k = None if fs is None else fs.repeat(k)

        def model(x: torch.Tensor, timesteps: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
            return self.net(x, timesteps, concat_k, context, fs_k)

        noise = torch.randn(concat.shape, generator=generator, device=image.device, dtype=concat.dtype)
        latents = denoise_loop(
            model,
            noise,
            self.schedule.ddim(cfg.num_steps, cfg.eta, cfg.timestep_spacing),
            guidance,
            hooks=hooks,
            generator=generator,
            progress=progress,
        )
        return self.decode_video(latents)

    # ---------------------------------------------------------------------------------------- validation
    def validation_step(self, batch: dict, batch_idx: int) -> None:
        video = batch["video"]
        generator = torch.Generator(device=video.device).manual_seed(batch_idx)
        generated = self.sample(
            video[:, :, 0],
            list(batch["caption"]),
            num_frames=video.shape[2],
            frame_stride=batch.get("frame_stride"),
            fps=batch.get("fps"),
            generator=generator,
        )
        from src.eval.animation_scores import video_psnr, video_ssim

        b = video.shape[0]
        self.log("val/psnr", video_psnr(generated, video).mean(), batch_size=b, sync_dist=True)
        self.log("val/ssim", video_ssim(generated, video).mean(), batch_size=b, sync_dist=True)
        self.last_validation_videos = {"generated": generated, "batch": batch}

    def sampling_settings(self) -> dict[str, Any]:
        return asdict(self.sampling)
