"""Shared random DreamSim ensemble (full ViT-B/16 size) for the check against the `dreamsim` package.

`write_random_dreamsim_folder` writes the files our loader reads, laid out as the package's cache folder. The
package's outputs on the same files are in tests/data/dreamsim/ (see its README). Every value comes from a
seeded torch.Generator, so the test rebuilds the folder instead of storing about 1 GB of weights.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from src.eval.dreamsim import BRANCHES, DREAMSIM_FILES, build_branch_vit

REFERENCE_DIR = Path(__file__).resolve().parents[1] / "data" / "dreamsim"
LORA_RANK, LORA_ALPHA = 16, 8.0


def _random_like(name: str, value: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    noise = torch.randn(value.shape, generator=gen)
    if name.endswith("norm1.weight") or name.endswith("norm2.weight") or name.split(".")[0] in ("norm", "norm_pre"):
        return 1.0 + 0.1 * noise if name.endswith("weight") else 0.02 * noise
    return 0.02 * noise


def write_random_dreamsim_folder(root: Path, seed: int = 0) -> Path:
    """DINO, CLIP and OpenCLIP ViT-B/16 files plus a LoRA adapter on every qkv, all random, under `root`."""
    gen = torch.Generator().manual_seed(seed)
    (root / "checkpoints").mkdir(parents=True, exist_ok=True)
    lora = {}
    for index, branch in enumerate(BRANCHES):
        template = build_branch_vit(branch).state_dict()
        state = {name: _random_like(name, value, gen) for name, value in sorted(template.items())}
        if branch == "dino":
            torch.save(state, root / DREAMSIM_FILES["dino"])
        else:  # the package's DINO-layout CLIP files: ln_pre stored as pos_drop, projection as "proj"
            state = {name.replace("norm_pre.", "pos_drop."): value for name, value in state.items()}
            state["proj"] = torch.randn(768, 512, generator=gen) * 768**-0.5
            torch.save({"state_dict": state}, root / DREAMSIM_FILES[branch])
        for block in range(12):
            stem = f"base_model.model.extractor_list.{index}.model.blocks.{block}.attn.qkv"
            lora[f"{stem}.lora_A.weight"] = torch.randn(LORA_RANK, 768, generator=gen) * 0.02
            lora[f"{stem}.lora_B.weight"] = torch.randn(3 * 768, LORA_RANK, generator=gen) * 0.02
    (root / "ensemble_lora").mkdir(exist_ok=True)
    save_file(lora, str(root / "ensemble_lora" / "adapter_model.safetensors"))
    config = {
        "peft_type": "LORA", "r": LORA_RANK, "lora_alpha": LORA_ALPHA, "lora_dropout": 0.0, "bias": "none",
        "target_modules": ["qkv"], "task_type": None, "inference_mode": True, "base_model_name_or_path": None,
    }
    (root / "ensemble_lora" / "adapter_config.json").write_text(json.dumps(config))
    return root


def shared_random_images(seed: int = 3, count: int = 3, height: int = 200, width: int = 260) -> torch.Tensor:
    """`(count, H, W, 3)` uint8 smooth random images of a non-224, non-square size (the resize is exercised)."""
    gen = torch.Generator().manual_seed(seed)
    coarse = torch.rand(count, 3, height // 20, width // 20, generator=gen)
    smooth = torch.nn.functional.interpolate(coarse, size=(height, width), mode="bilinear", align_corners=False)
    noise = torch.rand(count, 3, height, width, generator=gen) * 0.15
    images = ((smooth * 0.85 + noise).clamp(0, 1) * 255).round().to(torch.uint8)
    return images.permute(0, 2, 3, 1).contiguous()
