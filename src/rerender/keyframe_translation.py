"""Rerender-A-Video's key-frame translation: SD1.5 + ControlNet with the hierarchical cross-frame constraints.

The first key frame is the anchor: denoised alone while the cross-frame attention store records its decoder
features and `AnchorX0` its x0 per step. Each later key frame j (previous key frame p) runs, as the official code:
1. pass 1: cross-frame attention on [anchor; p] + AdaIN (late) + shape-aware fusion of x0 with the anchor's x0
   warped by the flow j -> anchor (early) -> the direct result;
2. the pixel reference (warped outputs of p and the anchor over the direct result) encoded by E*;
3. pass 2: the same constraints + pixel-aware fusion towards that target (middle steps); its decoder features
   become the "previous" ones every `style_update_freq` key frames (1 = every key frame, the official behaviour
   at K=10 with its freq 10) -> key frame j.
Both passes start from the same seeded noise, and so does every key frame (the official code re-seeds each pass).
With `pixel_fusion: off` pass 1 is the result. All sampling goes through the shared loop `denoise_loop`
(classifier-free guidance batched: cond + uncond in one UNet call). Frames `3 H W` in [0, 1] at the processing
resolution; control images `3 H W` in [0, 1], one per key frame (Canny/HED maps, built by the caller).
"""

from __future__ import annotations

import logging

import torch

from src.models.sampling import Guidance, SamplingHook, denoise_loop
from src.rerender.colour_correction import match_colours
from src.rerender.constraint_hooks import AdaINHook, AnchorX0, CrossFrameStepHook, ShapeFusionHook
from src.rerender.controlled_unet import ControlledUNet, encode_prompts, sd_ddim_schedule
from src.rerender.cross_frame_attention import CrossFrameStore, install_cross_frame_attention
from src.rerender.fidelity_encoder import decode, encode, fidelity_encode
from src.rerender.flow import FlowEstimator
from src.rerender.key_flow import key_flow
from src.rerender.pixel_fusion import PixelFusionHook, pixel_reference, reference_mask
from src.rerender.sd_components import SDComponents
from src.rerender.shape_fusion import latent_flow_and_mask
from src.rerender.translation_settings import TranslationSettings

__all__ = ["KeyframeTranslator"]
log = logging.getLogger(__name__)


def vae_factor(vae) -> int:
    return 2 ** (len(vae.config.block_out_channels) - 1)


def size_multiple(components: SDComponents) -> int:
    """Frame sides must divide by this: the VAE's factor times the UNet's downsampling (SD1.5: 8 * 8 = 64)."""
    return vae_factor(components.vae) * 2 ** (len(components.unet.config.block_out_channels) - 1)


class KeyframeTranslator:
    """Translates key frames of one video; installs cross-frame attention processors on `components.unet`."""

    def __init__(self, components: SDComponents, settings: TranslationSettings, flow: FlowEstimator) -> None:
        self.c, self.s, self.flow = components, settings, flow
        self.store = CrossFrameStore(getattr(torch, settings.store_dtype))
        self.layers = install_cross_frame_attention(components.unet, self.store, settings.loose_cfattn)
        self.guidance = Guidance(settings.guidance_scale)
        self.schedule = sd_ddim_schedule(components.scheduler_config, settings.num_steps, settings.eta)
        self.start = settings.start_step()
        self.factor = vae_factor(components.vae)
        self.text = encode_prompts(
            components.tokenizer,
            components.text_encoder,
            settings.full_prompt,
            settings.negative_prompt,
            self.guidance,
        )

    @property
    def device(self) -> torch.device:
        return self.c.unet.device

    def _denoise(self, frame: torch.Tensor, control: torch.Tensor, hooks: list[SamplingHook], pixel=None):
        """One pass over the schedule from the seeded noise (SDEdit: the encoded frame re-noised at the start)."""
        generator = torch.Generator(self.device).manual_seed(self.s.seed)
        h, w = frame.shape[-2] // self.factor, frame.shape[-1] // self.factor
        shape = (1, self.c.unet.config.in_channels, 1, h, w)
        x = torch.randn(shape, generator=generator, device=self.device, dtype=torch.float32)
        if self.start > 0:
            clean = encode(self.c.vae, frame[None].to(self.device))[:, :, None]
            x = self.schedule.states()[self.start].add_noise(clean, x)
        if pixel is not None:
            hooks = [*hooks, pixel(generator)]
        k = len(self.guidance.branches)
        model = ControlledUNet(
            self.c.unet, self.c.controlnet, self.text, control[None].repeat(k, 1, 1, 1), self.s.control_scale
        )
        latent = denoise_loop(
            model, x, self.schedule, self.guidance, hooks=hooks, generator=generator, start_step=self.start
        )
        return decode(self.c.vae, latent[:, :, 0])

    def _check(self, frames: torch.Tensor, keys: list[int], controls: torch.Tensor) -> None:
        multiple = size_multiple(self.c)
        if frames.shape[-2] % multiple or frames.shape[-1] % multiple:
            raise ValueError(
                f"key-frame translation needs frame sides divisible by {multiple} (VAE x UNet downsampling); got "
                f"{tuple(frames.shape[-2:])}. Set rerender.resolution so the processing size fits."
            )
        if len(controls) != len(keys):
            raise ValueError(
                f"{len(keys)} key frames but {len(controls)} control images; give one per key frame"
            )
        if keys != sorted(set(keys)) or not keys or keys[-1] >= len(frames):
            raise ValueError(
                f"key frame indices must be increasing, unique and below {len(frames)}; got {keys}"
            )

    @torch.no_grad()
    def translate(
        self, frames: torch.Tensor, keys: list[int], controls: torch.Tensor
    ) -> dict[int, torch.Tensor]:
        """{key index: translated frame `3 H W` in [0, 1]} for `frames` `t 3 H W`; `keys[0]` is the anchor."""
        self._check(frames, keys, controls)
        s, windows = self.s, self.s.windows
        step_hook, anchor = CrossFrameStepHook(self.store, windows), AnchorX0()
        self.store.set_mode("record")
        outputs = {keys[0]: self._denoise(frames[keys[0]], controls[0], [step_hook, anchor])}
        log.info("anchor key frame %d done; cross-frame store %.1f MB", keys[0], self.store.nbytes() / 2**20)
        first = outputs[keys[0]]
        for ordinal, (prev, j) in enumerate(zip(keys, keys[1:]), start=1):
            frame = frames[j] if s.color_preserve else match_colours(frames[j], first[0])
            to_prev, to_anchor = (
                key_flow(self.flow, frames[j], frames[prev]),
                key_flow(self.flow, frames[j], frames[keys[0]]),
            )
            latent_flow, mask = latent_flow_and_mask(to_anchor.flow, to_anchor.occlusion, self.factor)
            hooks = [
                step_hook,
                AdaINHook(anchor, windows),
                ShapeFusionHook(anchor, windows, latent_flow, mask),
            ]
            update = ordinal % s.style_update_freq == 0
            if s.pixel_fusion == "off":
                self.store.set_mode("attend", update_previous=update)
                outputs[j] = self._denoise(frame, controls[ordinal], hooks)
                continue
            self.store.set_mode("attend")
            direct = self._denoise(frame, controls[ordinal], hooks)
            reference = pixel_reference(
                direct,
                to_prev.warp(outputs[prev]),
                to_prev.occlusion,
                to_anchor.warp(first),
                to_anchor.occlusion,
            )
            valid = reference_mask(to_prev.occlusion, to_anchor.occlusion, self.factor)
            target = fidelity_encode(self.c.vae, reference, s.fidelity_strength, s.fidelity_threshold) * valid

            def pixel(generator, target=target, valid=valid):
                return PixelFusionHook(
                    windows,
                    target,
                    valid,
                    s.pixel_fusion,
                    s.mask_strength,
                    s.inner_strength,
                    s.smooth_boundary,
                    generator,
                )

            self.store.set_mode("attend", update_previous=update)
            outputs[j] = self._denoise(frame, controls[ordinal], hooks, pixel)
        return {k: v[0] for k, v in outputs.items()}
