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


KEY_TARGET_S, MEMORY_TARGET_GB = 3.0, 12.0


def measure(smoke: bool = False, keys: int = 4, size: int = 512) -> dict:
    """Seconds per key frame (after a warm-up) and peak memory; `smoke`: tiny models at 64x64 on the CPU."""
    from pathlib import Path
    from tempfile import mkdtemp

    from tests.tiny_sd import tiny_components, tiny_tokenizer

    if smoke:
        device, size = torch.device("cpu"), 64
        components = tiny_components(Path(mkdtemp()))
    else:
        from bench.common import require_cuda

        device = require_cuda("bench.rerender_keyframes")
        components = sd15_shaped(device, tiny_tokenizer(Path(mkdtemp())))
    frames_u8, _ = demo_video(3, keys, size, size)
    frames = torch.from_numpy(frames_u8).to(device).permute(0, 3, 1, 2).float() / 255
    steps = 4 if smoke else 20  # the paper's 20 DDIM steps; fewer only to keep the CPU smoke run short
    settings = TranslationSettings(prompt="a watercolor painting", denoising_strength=None, num_steps=steps)
    translator = KeyframeTranslator(components, settings, DisFlow())
    translator.translate(frames[:2], [0, 1], frames[:2])  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    translator.translate(frames, list(range(keys)), frames)
    if device.type == "cuda":
        torch.cuda.synchronize()
    per_key = (time.perf_counter() - start) / keys
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None
    return {
        "size": size,
        "keys": keys,
        "num_steps": steps,
        "seconds_per_key_frame": per_key,
        "anchor_and_later_keys": "the anchor runs one pass, later key frames two",
        "peak_memory_gb": peak,
        "cross_frame_store_mb": translator.store.nbytes() / 2**20,
        "targets": {"seconds_per_key_frame": KEY_TARGET_S, "peak_memory_gb": MEMORY_TARGET_GB},
        "targets_met": None if peak is None else bool(per_key < KEY_TARGET_S and peak < MEMORY_TARGET_GB),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=4, help="key frames translated in the timed run")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument(
        "--smoke", action="store_true", help="tiny models on the CPU (checks the script runs)"
    )
    args = parser.parse_args()
    result = measure(args.smoke, args.keys, args.size)
    print(result)
    if not args.smoke:
        from bench.common import write_results

        print("written", write_results("rerender_keyframes", result))


if __name__ == "__main__":
    main()
