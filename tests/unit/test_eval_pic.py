"""PIC arithmetic with a tiny stand-in embedder, and the DreamSim ensemble loader on a tiny random folder
laid out as DreamSim's cache (strict loads, LoRA merge, clear errors)."""

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from src.eval.dreamsim import BRANCHES, DREAMSIM_FILES, build_branch_vit, load_dreamsim_ensemble
from src.eval.pic import PerceptualInputConformity
from src.eval.weights import MissingWeightFileError


class PooledEmbedder(nn.Module):
    """Stand-in: a fixed projection of 2x2-pooled pixels plus an offset (so cosines are not trivial)."""

    def __init__(self) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(5)
        self.proj = nn.Parameter(torch.randn(12, 5, generator=gen), requires_grad=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return nn.functional.adaptive_avg_pool2d(images, 2).flatten(1) @ self.proj + 0.3


def test_pic_is_mean_over_frames_of_one_minus_cosine_distance():
    gen = torch.Generator().manual_seed(0)
    videos, images = torch.rand(3, 4, 3, 16, 16, generator=gen), torch.rand(3, 3, 16, 16, generator=gen)
    metric = PerceptualInputConformity(embedder=PooledEmbedder())
    metric.update(videos[:2], images[:2])
    metric.update((videos[2:] * 255).round().to(torch.uint8), (images[2:] * 255).round().to(torch.uint8))
    embed = PooledEmbedder()
    videos[2:], images[2:] = (videos[2:] * 255).round() / 255, (images[2:] * 255).round() / 255
    per_video = []
    for video, image in zip(videos, images):
        e_in = embed(image[None]).double().numpy()[0]
        e_frames = embed(video).double().numpy()
        distances = 1 - (e_frames @ e_in) / (np.linalg.norm(e_frames, axis=1) * np.linalg.norm(e_in))
        per_video.append(np.mean(1 - distances))
    assert float(metric.compute()) == pytest.approx(float(np.mean(per_video)), rel=1e-6)


def test_frames_equal_to_the_input_give_one():
    image = torch.rand(1, 3, 16, 16)
    metric = PerceptualInputConformity(embedder=PooledEmbedder())
    metric.update(image[:, None].expand(1, 5, 3, 16, 16), image)
    assert float(metric.compute()) == pytest.approx(1.0, abs=1e-6)
    with pytest.raises(ValueError, match="one input image per video"):
        metric.update(torch.rand(2, 2, 3, 16, 16), image)


TINY = {"embed_dim": 32, "depth": 2, "num_heads": 2}


def _write_tiny_dreamsim_folder(root, lora_scale: float = 0.5, extra_key: bool = False):
    torch.manual_seed(0)
    (root / "checkpoints").mkdir(parents=True)
    lora = {}
    for index, branch in enumerate(BRANCHES):
        state = {
            k: v + 0.05 * torch.randn_like(v)
            for k, v in build_branch_vit(branch, **TINY).state_dict().items()
        }
        if branch == "dino":
            torch.save(state, root / DREAMSIM_FILES["dino"])
        else:  # DreamSim's DINO-layout CLIP files: ln_pre stored as pos_drop, projection as "proj"
            state = {k.replace("norm_pre.", "pos_drop."): v for k, v in state.items()}
            state["proj"] = torch.randn(32, 16) * 0.2
            torch.save({"state_dict": state}, root / DREAMSIM_FILES[branch])
        for block in range(TINY["depth"]):
            stem = f"base_model.model.extractor_list.{index}.model.blocks.{block}.attn.qkv"
            lora[f"{stem}.lora_A.weight"] = torch.randn(4, 32)
            lora[f"{stem}.lora_B.weight"] = torch.randn(96, 4) * lora_scale
    if extra_key:
        lora["base_model.model.mlp.lora_A.weight"] = torch.zeros(1)
    (root / "ensemble_lora").mkdir()
    save_file(lora, str(root / "ensemble_lora" / "adapter_model.safetensors"))
    config = {"r": 4, "lora_alpha": 2.0, "lora_dropout": 0.3, "bias": "none", "target_modules": ["qkv"]}
    (root / "ensemble_lora" / "adapter_config.json").write_text(json.dumps(config))
    return lora


def test_dreamsim_loader_merges_lora_and_embeds(tmp_path):
    lora = _write_tiny_dreamsim_folder(tmp_path)
    ensemble = load_dreamsim_ensemble(tmp_path, **TINY)
    # qkv of CLIP (index 1) block 1 = stored weight + (alpha / r) * B @ A
    stored = torch.load(tmp_path / DREAMSIM_FILES["clip"], weights_only=True)["state_dict"][
        "blocks.1.attn.qkv.weight"
    ]
    stem = "base_model.model.extractor_list.1.model.blocks.1.attn.qkv"
    expected = stored + 0.5 * lora[f"{stem}.lora_B.weight"] @ lora[f"{stem}.lora_A.weight"]
    torch.testing.assert_close(ensemble.branches["clip"].vit.blocks[1].attn.qkv.weight, expected)
    emb = ensemble(torch.rand(2, 3, 40, 30))  # resized to 224x224 inside, no crop
    assert emb.shape == (2, 32 + 16 + 16)
    torch.testing.assert_close(emb.mean(dim=-1), torch.zeros(2), atol=1e-6, rtol=0)
    torch.testing.assert_close(emb.norm(dim=-1), torch.ones(2))
    image = torch.rand(1, 3, 64, 64)
    assert float(ensemble.distance(image, image)) == pytest.approx(0.0, abs=1e-6)
    metric = PerceptualInputConformity(dreamsim_dir=None, embedder=ensemble)
    metric.update(image[:, None].expand(1, 2, 3, 64, 64), image)
    assert float(metric.compute()) == pytest.approx(1.0, abs=1e-6)


def test_dreamsim_loader_errors_name_the_file_and_key(tmp_path):
    with pytest.raises(MissingWeightFileError, match=r"eval\.dreamsim_dir.*dreamsim_ensemble_checkpoint"):
        PerceptualInputConformity(dreamsim_dir=tmp_path / "absent")
    _write_tiny_dreamsim_folder(tmp_path / "a")
    (tmp_path / "a" / DREAMSIM_FILES["open_clip"]).unlink()
    with pytest.raises(MissingWeightFileError, match="open_clip_vitb16_pretrain.pth.tar"):
        load_dreamsim_ensemble(tmp_path / "a", **TINY)
    _write_tiny_dreamsim_folder(tmp_path / "b", extra_key=True)
    with pytest.raises(ValueError, match="does not use"):
        load_dreamsim_ensemble(tmp_path / "b", **TINY)
    with pytest.raises(ValueError, match="does not match"):  # a ViT-B/16 loader on tiny files
        load_dreamsim_ensemble(tmp_path / "b")


_REAL_DREAMSIM = Path(
    os.environ.get(
        "DREAMSIM_DIR", Path(os.environ.get("I2V_WEIGHTS_DIR", "~/.cache/i2v-weights")) / "dreamsim"
    )
).expanduser()


@pytest.mark.skipif(not _REAL_DREAMSIM.is_dir(), reason=f"real DreamSim folder not found at {_REAL_DREAMSIM}")
def test_real_dreamsim_ensemble_loads_and_embeds():
    ensemble = load_dreamsim_ensemble(_REAL_DREAMSIM)
    image = torch.rand(1, 3, 256, 256)
    assert ensemble(image).shape == (1, 768 + 512 + 512)
    assert float(ensemble.distance(image, image)) == pytest.approx(0.0, abs=1e-5)
    assert float(ensemble.distance(image, 1 - image)) > 0.05
