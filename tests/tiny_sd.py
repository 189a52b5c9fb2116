"""Tiny random Stable Diffusion 1.5-shaped components for Rerender's key-frame tests (no weight files).

The UNet has two decoder attention widths (16 and 32 channels) so `loose_cfattn` has a widest block to drop; the
VAE downsamples 8x like SD's; the ControlNet's zero convolutions get small random weights so the control image
matters; the tokenizer is character-level, written here. `save_tiny_sd_folder` lays them out as diffusers folders
(`<dir>/sd/{unet,vae,text_encoder,tokenizer,scheduler}`, `<dir>/controlnet`).
"""

from __future__ import annotations

import json
import string
from pathlib import Path

import torch

from src.rerender.sd_components import SDComponents

SCHEDULER_CONFIG = {
    "_class_name": "DDIMScheduler",
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "num_train_timesteps": 1000,
    "prediction_type": "epsilon",
    "steps_offset": 1,
    "clip_sample": False,
    "set_alpha_to_one": False,
    "timestep_spacing": "leading",
}
MAX_TOKENS = 16


def tiny_tokenizer(folder: Path):
    """A character-level CLIP tokenizer (no merges) written to `folder`."""
    from transformers import CLIPTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in sorted(set(string.ascii_lowercase + string.digits + ",.!?'-")):
        vocab[c] = len(vocab)
        vocab[c + "</w>"] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    return CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=MAX_TOKENS)


def tiny_vae(seed: int = 0):
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    return AutoencoderKL(
        block_out_channels=(8, 8, 8, 8),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        latent_channels=4,
        norm_num_groups=4,
        layers_per_block=1,
        sample_size=64,
    ).eval()


def tiny_components(tmp: Path, seed: int = 0) -> SDComponents:
    from diffusers import ControlNetModel, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    tokenizer = tiny_tokenizer(tmp / "tokenizer_files")
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        block_out_channels=(16, 32, 32),
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=4,
        norm_num_groups=8,
    ).eval()
    controlnet = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(8, 8, 8, 8)).eval()
    with torch.no_grad():
        for name, p in controlnet.named_parameters():
            if name.startswith(
                ("controlnet_down_blocks", "controlnet_mid_block", "controlnet_cond_embedding.conv_out")
            ):
                p.normal_(0, 0.5)
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer.get_vocab()),
            hidden_size=32,
            intermediate_size=37,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=MAX_TOKENS,
            bos_token_id=0,
            eos_token_id=1,
            pad_token_id=1,
        )
    ).eval()
    return SDComponents(
        unet, tiny_vae(seed), text_encoder, tokenizer, controlnet, dict(SCHEDULER_CONFIG), "canny"
    )


def save_tiny_sd_folder(folder: Path, seed: int = 0) -> Path:
    """The tiny components as a diffusers SD folder + ControlNet folder under `folder`; returns `folder`."""
    from diffusers import DDIMScheduler

    c = tiny_components(folder / "scratch", seed)
    sd = folder / "sd"
    c.unet.save_pretrained(sd / "unet")
    c.vae.save_pretrained(sd / "vae")
    c.text_encoder.save_pretrained(sd / "text_encoder")
    c.tokenizer.save_pretrained(sd / "tokenizer")
    DDIMScheduler.from_config(c.scheduler_config).save_pretrained(sd / "scheduler")
    c.controlnet.save_pretrained(folder / "controlnet")
    return folder
