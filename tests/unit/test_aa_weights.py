"""Strict weight loading: folders written by save_pretrained load; missing keys/files fail with named causes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from diffusers import UNet2DConditionModel
from safetensors.torch import load_file, save_file

from src.models.animate_anyone import build_tiny_unet, load_unet
from src.models.weights import (
    WeightLoadError,
    load_diffusers_model,
    load_state_dict_file,
    load_strict,
    require_file,
)

PUBLISHED = "https://example.org/weights"


@pytest.fixture
def unet_folder(tmp_path: Path) -> tuple[UNet2DConditionModel, Path]:
    torch.manual_seed(0)
    unet = build_tiny_unet(8, 4, 4)
    folder = tmp_path / "unet"
    unet.save_pretrained(folder)
    return unet, folder


def test_saved_folder_loads_with_equal_weights(unet_folder) -> None:
    unet, folder = unet_folder
    loaded = load_diffusers_model(UNet2DConditionModel, folder, "model.unet.path", PUBLISHED)
    for key, value in unet.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key


def test_load_unet_wrapper(unet_folder) -> None:
    unet, folder = unet_folder
    loaded = load_unet(folder)
    assert torch.equal(loaded.conv_out.weight, unet.conv_out.weight)
    with pytest.raises(FileNotFoundError, match="model.net.denoising_unet.path"):
        load_unet(folder / "absent", config_key="model.net.denoising_unet.path")


def test_removed_key_is_named(unet_folder) -> None:
    _, folder = unet_folder
    weights = folder / "diffusion_pytorch_model.safetensors"
    state = load_file(str(weights))
    removed = "up_blocks.1.attentions.0.transformer_blocks.0.attn1.to_k.weight"
    del state[removed]
    save_file(state, str(weights))
    with pytest.raises(WeightLoadError) as err:
        load_diffusers_model(UNet2DConditionModel, folder, "model.unet.path", PUBLISHED)
    message = str(err.value)
    assert removed in message and "missing keys" in message and str(weights) in message


def test_missing_folder_and_weights_name_path_and_config_key(tmp_path: Path, unet_folder) -> None:
    with pytest.raises(FileNotFoundError) as err:
        load_diffusers_model(UNet2DConditionModel, tmp_path / "absent", "model.unet.path", PUBLISHED)
    assert str(tmp_path / "absent") in str(err.value) and "model.unet.path" in str(err.value)
    assert PUBLISHED in str(err.value)
    _, folder = unet_folder
    (folder / "diffusion_pytorch_model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="diffusion_pytorch_model"):
        load_diffusers_model(UNet2DConditionModel, folder, "model.unet.path", PUBLISHED)
    with pytest.raises(FileNotFoundError, match="model.codec.path"):
        require_file(tmp_path / "vae.safetensors", "model.codec.path", PUBLISHED)


def test_load_strict_reports_unexpected_and_shape_mismatch() -> None:
    module = torch.nn.Linear(3, 2)
    state = {"weight": torch.zeros(2, 4), "bias": torch.zeros(2), "scale": torch.ones(1)}
    with pytest.raises(WeightLoadError) as err:
        load_strict(module, state, source="file.pt")
    message = str(err.value)
    assert "unexpected keys: scale" in message and "weight: file (2, 4) vs model (2, 3)" in message
    assert "file.pt" in message
    many = {f"extra.{i}": torch.zeros(1) for i in range(25)} | dict(module.state_dict())
    with pytest.raises(WeightLoadError, match=r"\(25 in total\)"):
        load_strict(module, many, source="file.pt")


@pytest.mark.parametrize(
    "suffix,wrap", [(".bin", False), (".pt", False), (".ckpt", True), (".safetensors", False)]
)
def test_state_dict_file_formats(tmp_path: Path, suffix: str, wrap: bool) -> None:
    state = {"a": torch.arange(3.0), "b.c": torch.ones(2, 2)}
    path = tmp_path / f"w{suffix}"
    if suffix == ".safetensors":
        save_file(state, str(path))
    else:
        torch.save({"state_dict": state, "epoch": 3} if wrap else state, path)
    loaded = load_state_dict_file(path)
    assert set(loaded) == set(state) and all(torch.equal(loaded[k], state[k]) for k in state)


def test_unreadable_pickle_is_a_weight_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.pt"
    path.write_bytes(b"not a pickle")
    with pytest.raises(WeightLoadError, match="bad.pt"):
        load_state_dict_file(path)
