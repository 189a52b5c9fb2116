"""CLIP image embedders: one projected token per image, torchvision-equivalent preprocessing, strict loads."""

from __future__ import annotations

from pathlib import Path

import open_clip
import pytest
import torch
import torchvision.transforms.functional as TF
from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

from src.models.image_encoders import CLIP_MEAN, CLIP_STD, HFClipImageEmbedder, OpenClipImageEmbedder
from src.models.weights import WeightLoadError

TINY_HF = dict(
    hidden_size=32,
    intermediate_size=37,
    num_hidden_layers=2,
    num_attention_heads=4,
    image_size=32,
    patch_size=8,
    projection_dim=16,
)
TINY_OPEN_CLIP = dict(
    embed_dim=16,
    vision_cfg=dict(image_size=32, layers=2, width=32, patch_size=8, head_width=16),
    text_cfg=dict(context_length=8, vocab_size=100, width=32, heads=2, layers=1),
)


def _torchvision_preprocess(images: torch.Tensor, size: int) -> torch.Tensor:
    x = (images + 1) / 2
    x = TF.resize(x, size, interpolation=TF.InterpolationMode.BICUBIC, antialias=True)
    x = TF.center_crop(x, [size, size]).clamp(0, 1)
    return TF.normalize(x, CLIP_MEAN, CLIP_STD)


def test_hf_tiny_config_gives_one_projected_token() -> None:
    torch.manual_seed(0)
    embedder = HFClipImageEmbedder(config=TINY_HF)
    images = torch.rand(3, 3, 48, 64) * 2 - 1
    with torch.no_grad():
        out = embedder(images)
        expected = embedder.model(pixel_values=_torchvision_preprocess(images, 32)).image_embeds
    assert out.shape == (3, 1, 16) and embedder.embed_dim == 16
    torch.testing.assert_close(out[:, 0], expected, rtol=1e-4, atol=1e-5)
    embedder.train()
    assert not embedder.training and not any(p.requires_grad for p in embedder.parameters())


def test_omegaconf_configs_are_accepted() -> None:
    from omegaconf import OmegaConf

    assert HFClipImageEmbedder(config=OmegaConf.create(TINY_HF)).embed_dim == 16
    assert OpenClipImageEmbedder(model_config=OmegaConf.create(TINY_OPEN_CLIP)).embed_dim == 16


def test_hf_folder_loads_strictly(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = CLIPVisionModelWithProjection(CLIPVisionConfig(**TINY_HF))
    model.save_pretrained(tmp_path / "image_encoder")
    embedder = HFClipImageEmbedder(tmp_path / "image_encoder")
    for key, value in model.state_dict().items():
        assert torch.equal(embedder.model.state_dict()[key], value), key
    # an old-style pytorch_model.bin with the constant position_ids buffer still loads; a missing weight does not
    folder = tmp_path / "old"
    folder.mkdir()
    (folder / "config.json").write_text((tmp_path / "image_encoder" / "config.json").read_text())
    state = dict(model.state_dict())
    state["vision_model.embeddings.position_ids"] = torch.arange(17)[None]
    torch.save(state, folder / "pytorch_model.bin")
    HFClipImageEmbedder(folder)
    del state["visual_projection.weight"]
    torch.save(state, folder / "pytorch_model.bin")
    with pytest.raises(WeightLoadError, match="visual_projection.weight"):
        HFClipImageEmbedder(folder)
    with pytest.raises(FileNotFoundError, match="model.image_encoder.path"):
        HFClipImageEmbedder(tmp_path / "absent")


def test_open_clip_checkpoint_loads_visual_tower_strictly(tmp_path: Path) -> None:
    torch.manual_seed(0)
    clip = open_clip.CLIP(**TINY_OPEN_CLIP)
    path = tmp_path / "open_clip_pytorch_model.bin"
    torch.save(clip.state_dict(), path)
    torch.manual_seed(1)  # a different random init, overwritten by the checkpoint
    embedder = OpenClipImageEmbedder(checkpoint=path, model_config=TINY_OPEN_CLIP)
    images = torch.rand(2, 3, 40, 40) * 2 - 1
    with torch.no_grad():
        out = embedder(images)
        expected = clip.encode_image(_torchvision_preprocess(images, 32))
    assert out.shape == (2, 1, 16) and embedder.embed_dim == 16
    torch.testing.assert_close(out[:, 0], expected, rtol=1e-4, atol=1e-5)
    state = clip.state_dict()
    del state["visual.proj"]
    torch.save(state, path)
    with pytest.raises(WeightLoadError, match="missing keys: proj"):
        OpenClipImageEmbedder(checkpoint=path, model_config=TINY_OPEN_CLIP)
    torch.save({"text_projection": torch.zeros(1)}, path)
    with pytest.raises(WeightLoadError, match="visual"):
        OpenClipImageEmbedder(checkpoint=path, model_config=TINY_OPEN_CLIP)


def test_random_config_encoder_is_a_function_of_its_seed_alone():
    import torch

    from src.models.image_encoders import HFClipImageEmbedder

    config = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                  image_size=32, patch_size=8, projection_dim=8)
    torch.manual_seed(1)
    a = HFClipImageEmbedder(config=config)
    torch.manual_seed(2)
    b = HFClipImageEmbedder(config=config)
    c = HFClipImageEmbedder(config=config, init_seed=5)
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(pa, pb), name
    assert any(not torch.equal(pa, pc) for pa, pc in zip(a.state_dict().values(), c.state_dict().values()))
