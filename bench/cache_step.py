"""Training step from raw video against the step from the latent cache, at the papers' sizes.

Issue 14's cache target: at least 25% less step time for DynamiCrafter 512 (16x320x512, batch 2) and Animate
Anyone stage 1 (768x768, batch 4) on a GPU. Both columns run our LightningModule's `training_step` on the same
module and batch (bench/reference_step.py, which also times the reference code's step style beside them); the
cached one gets the frozen encoders' outputs instead of pixels, as `data.cache` feeds them.

Real architectures with random weights, so no files are needed:
- DynamiCrafter 512: its experiment with `model.checkpoint=null` (random ViT-H-14 towers, kl-f8 VAE, 512 UNet);
- Animate Anyone stage 1: the SD1.5 UNet pair + Pose Guider (bench/peak_memory.py), a random kl-f8 VAE of
  sd-vae-ft-mse's architecture (LDMVAECodec builds that same diffusers AutoencoderKL) and a random CLIP ViT-L/14
  vision tower with the 768 projection (sd-image-variations' image encoder).

    python bench/cache_step.py [--device cuda] [--steps 5] [--smoke]

`--smoke`: the same code paths at tiny sizes on the CPU (bench/gpu_suite.py --smoke, which CI runs).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench import reference_step  # noqa: E402
from bench.common import table  # noqa: E402
from bench.peak_memory import SD15_UNET, TINY_UNET  # noqa: E402

# CLIP ViT-L/14 vision tower with sd-image-variations' 768-d projection (transformers CLIPVisionConfig).
CLIP_VIT_L14 = dict(
    hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16, image_size=224,
    patch_size=14, projection_dim=768,
)
TINY_CLIP = dict(
    hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=32, patch_size=8,
    projection_dim=TINY_UNET["cross_attention_dim"],
)
# kl-f8, the architecture of sd-vae-ft-mse and of DynamiCrafter's first stage (LDM ddconfig names).
KL_F8 = dict(
    double_z=True, z_channels=4, resolution=256, in_channels=3, out_ch=3, ch=128, ch_mult=[1, 2, 4, 4],
    num_res_blocks=2, attn_resolutions=[], dropout=0.0,
)
TINY_KL = dict(KL_F8, ch=32, ch_mult=[1, 2, 2, 2], num_res_blocks=1)


def animate_anyone_parts(unet: dict, clip: dict, vae: dict) -> dict[str, dict]:
    """Config nodes replacing the Animate Anyone experiment's file-backed parts (stage 1) with random ones."""
    return {
        "model.net": {"_target_": "bench.peak_memory.aa_net", "stage": "spatial", "checkpointing": False,
                      "unet": unet},
        "model.codec": {"_target_": "src.models.dynamicrafter.vae.LDMVAECodec", "ddconfig": vae},
        "model.image_encoder": {"_target_": "src.models.image_encoders.HFClipImageEmbedder", "config": clip},
        "model.motion_adapter": None,  # stage 2 only; its node reads the replaced net's keys
    }  # fmt: skip


def configs(smoke: bool) -> dict[str, dict]:
    """name -> reference_step.measure kwargs."""
    if smoke:
        return {
            "aa_stage1_64px_b1": dict(
                system="aa", experiment="animate_anyone", batch=1,
                overrides=["stages.spatial.data.size=[64,64]"],
                parts=animate_anyone_parts(TINY_UNET, TINY_CLIP, TINY_KL),
            ),
            "dc_demo_b1": dict(system="dc", experiment="dynamicrafter_demo", batch=1),
        }  # fmt: skip
    return {
        "aa_stage1_768px_b4": dict(
            system="aa", experiment="animate_anyone", batch=4,
            parts=animate_anyone_parts(SD15_UNET, CLIP_VIT_L14, KL_F8),
        ),
        "dc_512_16x320x512_b2": dict(
            system="dc", experiment="dynamicrafter_512", batch=2, overrides=["model.checkpoint=null"],
        ),
    }  # fmt: skip


def measure(smoke: bool, device: str = "cuda", steps: int = 5) -> dict[str, dict]:
    """Each configuration's columns (bf16 autocast on the GPU, fp32 on a CPU), one after the other."""
    results = {}
    for name, kwargs in configs(smoke).items():
        results[name] = reference_step.measure(
            device=device, steps=1 if smoke else steps, bf16=device != "cpu", **kwargs
        )
        if device != "cpu":
            torch.cuda.empty_cache()
    return results


def _gib(result: dict, key: str) -> str:
    return f"{result[key]:.1f}" if key in result else "-"


def rows(results: dict[str, dict]) -> list[list[str]]:
    out = [["configuration", "raw ms", "cached ms", "time saved", "raw GiB", "cached GiB", "reference ms"]]
    for name, r in results.items():
        out.append([name, f"{r['ours_ms']:.1f}", f"{r['ours_cached_ms']:.1f}", f"{r['cached_step_time_saved']:.0%}",
                    _gib(r, "ours_peak_gib"), _gib(r, "ours_cached_peak_gib"), f"{r['reference_ms']:.1f}"])  # fmt: skip
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes (runs on a CPU)")
    args = parser.parse_args()
    results = measure(args.smoke, args.device, args.steps)
    print(table(rows(results)))
    print("target: time saved >= 25% for both configurations on a GPU")


if __name__ == "__main__":
    main()
