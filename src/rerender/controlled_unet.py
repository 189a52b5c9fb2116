"""Stable Diffusion 1.5 + ControlNet as a model of the shared denoising loop (`src.models.sampling`).

`ControlledUNet(x, t, frames)` takes the loop's `(k*b) c 1 h w` latents (the guidance branches stacked, one
frame) and returns the UNet's eps in the same layout: ControlNet residuals (all scaled by `control_scale`, as
the official 13 equal control scales) feed the UNet, and both branches of classifier-free guidance run in one
batched call (the official code makes two). `encode_prompts` builds the text conditioning in the loop's branch
order, `sd_ddim_schedule` the DDIM grid on the checkpoint's own scheduler (SD1.5: `leading` spacing with
steps_offset 1, i.e. LDM's DDIM timesteps 1, 51, ..., 951 for 20 steps).
"""

from __future__ import annotations

import torch
from diffusers import DDIMScheduler

from src.models.sampling import DDIMSchedule, Guidance

__all__ = ["ControlledUNet", "encode_prompts", "sd_ddim_schedule"]


class ControlledUNet:
    """The loop's model: `text` `(k*b) L D` and `control` `(k*b) 3 H W` in [0, 1] are stacked in branch order."""

    def __init__(
        self, unet, controlnet, text: torch.Tensor, control: torch.Tensor, control_scale: float
    ) -> None:
        if text.shape[0] != control.shape[0]:
            raise ValueError(
                f"text conditioning for {text.shape[0]} branches but control images for {control.shape[0]}"
            )
        self.unet, self.controlnet, self.control_scale = unet, controlnet, float(control_scale)
        self.text = text.to(unet.device, unet.dtype)
        self.control = control.to(controlnet.device, controlnet.dtype)

    def __call__(self, x: torch.Tensor, t: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
        if x.shape[2] != 1:
            raise ValueError(f"ControlledUNet denoises one frame per call, got {x.shape[2]} frames")
        latent = x[:, :, 0].to(self.unet.dtype)
        residuals = {}
        if self.control_scale != 0:
            down, mid = self.controlnet(
                latent,
                t,
                encoder_hidden_states=self.text,
                controlnet_cond=self.control,
                conditioning_scale=self.control_scale,
                return_dict=False,
            )
            residuals = {"down_block_additional_residuals": down, "mid_block_additional_residual": mid}
        eps = self.unet(latent, t, encoder_hidden_states=self.text, **residuals).sample
        return eps[:, :, None]


@torch.no_grad()
def encode_prompts(
    tokenizer, text_encoder, prompt: str, negative_prompt: str, guidance: Guidance
) -> torch.Tensor:
    """CLIP text embeddings `k L D` of the prompt (and the negative prompt for the unconditional branch)."""
    if guidance.image_scale is not None:
        raise ValueError(
            "Rerender's key frames take one guidance scale (text), not separate image/text scales"
        )
    texts = [prompt] + ([negative_prompt] if "uncond" in guidance.branches else [])
    ids = tokenizer(
        texts,
        padding="max_length",
        max_length=tokenizer.model_max_length,
        truncation=True,
        return_tensors="pt",
    ).input_ids
    return text_encoder(ids.to(text_encoder.device))[0]


def sd_ddim_schedule(scheduler_config: dict, num_steps: int, eta: float = 0.0) -> DDIMSchedule:
    """The DDIM grid of the checkpoint's scheduler settings, landing on t - T // n (alpha_bar[0] after the last
    step, as LDM and diffusers' set_alpha_to_one=False)."""
    config = {k: v for k, v in scheduler_config.items() if not k.startswith("_")}
    config.update(clip_sample=False, set_alpha_to_one=False)
    scheduler = DDIMScheduler.from_config(config)
    scheduler.set_timesteps(num_steps)
    jump = scheduler.config.num_train_timesteps // num_steps
    timesteps = [int(t) for t in scheduler.timesteps]
    prev = [t - jump if t - jump >= 0 else None for t in timesteps]
    return DDIMSchedule(scheduler.alphas_cumprod, timesteps, prev, scheduler.config.prediction_type, eta)
