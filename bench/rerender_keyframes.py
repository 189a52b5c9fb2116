"""GPU benchmark of Rerender's key-frame translation at 512x512: seconds per key frame and peak memory with
SD1.5-shaped random models (no weight files: speed and memory do not depend on the weights), fp16, SDPA, batched
CFG, 20 steps, both passes with pixel fusion and E*, DIS flow. Targets (issue 13): < 3 s per key frame, < 12 GB.

    python -m bench.rerender_keyframes --keys 4            # CUDA GPU
    python -m bench.rerender_keyframes --smoke             # tiny models on the CPU: the script runs
"""

from __future__ import annotations

import argparse
import time

import torch

from src.rerender.demo import demo_video
from src.rerender.flow import DisFlow
from src.rerender.keyframe_translation import KeyframeTranslator
from src.rerender.sd_components import SDComponents
from src.rerender.translation_settings import TranslationSettings


def sd15_shaped(device: torch.device, tokenizer) -> SDComponents:
    """Random-initialised modules with SD1.5's and ControlNet-1.0's shapes (fp16, the VAE fp32)."""
    from diffusers import AutoencoderKL, ControlNetModel, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from tests.tiny_sd import SCHEDULER_CONFIG

    unet = UNet2DConditionModel(sample_size=64, cross_attention_dim=768, attention_head_dim=8)
    controlnet = ControlNetModel.from_unet(unet)
    vae = AutoencoderKL(
        block_out_channels=(128, 256, 512, 512),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        latent_channels=4,
        layers_per_block=2,
        sample_size=512,
    )
    text = CLIPTextModel(
        CLIPTextConfig(
            hidden_size=768,
            intermediate_size=3072,
            num_hidden_layers=12,
            num_attention_heads=12,
            max_position_embeddings=77,
        )
    )
    tokenizer.model_max_length = 77
    for part in (unet, controlnet, text):
        part.to(device, torch.float16).eval()
    return SDComponents(
        unet, vae.to(device).eval(), text, tokenizer, controlnet, dict(SCHEDULER_CONFIG), "canny"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=4, help="key frames translated in the timed run")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument(
        "--smoke", action="store_true", help="tiny models on the CPU (checks the script runs)"
    )
    args = parser.parse_args()
    from pathlib import Path
    from tempfile import mkdtemp

    from tests.tiny_sd import tiny_components, tiny_tokenizer

    if args.smoke:
        device, size = torch.device("cpu"), 64
        components = tiny_components(Path(mkdtemp()))
    else:
        from bench.common import require_cuda

        device, size = require_cuda("bench.rerender_keyframes"), args.size
        components = sd15_shaped(device, tiny_tokenizer(Path(mkdtemp())))
    frames_u8, _ = demo_video(3, args.keys, size, size)
    frames = torch.from_numpy(frames_u8).to(device).permute(0, 3, 1, 2).float() / 255
    settings = TranslationSettings(prompt="a watercolor painting", denoising_strength=None)
    translator = KeyframeTranslator(components, settings, DisFlow())
    keys = list(range(args.keys))
    translator.translate(frames[:2], [0, 1], frames[:2])  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    translator.translate(frames, keys, frames)
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    result = {
        "size": size,
        "keys": args.keys,
        "seconds_per_key_frame": seconds / args.keys,
        "anchor_and_later_keys": "the anchor runs one pass, later key frames two",
        "peak_memory_gb": torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None,
        "cross_frame_store_mb": translator.store.nbytes() / 2**20,
    }
    print(result)
    if device.type == "cuda":
        from bench.common import write_results

        print("written", write_results("rerender_keyframes", result))


if __name__ == "__main__":
    main()
