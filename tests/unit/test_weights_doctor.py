"""The weights doctor finds every pretrained file of an experiment and checks names/shapes from headers only."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from safetensors.torch import load_file, save_file

from src.check import report, run_check
from src.config import register_resolvers
from src.models.weight_files import read_shapes
from tests.conftest import ROOT, shared_data

register_resolvers()
AA_KEYS = ["model.net.reference_unet.folder", "model.codec.path", "model.image_encoder.path",
           "model.motion_adapter.path"]


def compose_check(*overrides: str):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose(config_name="check", overrides=list(overrides))


@pytest.fixture(scope="module")
def tiny_aa_weights(tmp_path_factory) -> Path:
    """Tiny stand-ins in the layout conf/model/animate_anyone.yaml expects (config.json + weights per folder)."""
    from diffusers import AutoencoderKL, MotionAdapter, UNet2DConditionModel
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    root = tmp_path_factory.mktemp("weights")
    UNet2DConditionModel(
        block_out_channels=(8, 16), layers_per_block=1, norm_num_groups=8, cross_attention_dim=8, sample_size=8,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        attention_head_dim=2,
    ).save_pretrained(root / "sd-image-variations-diffusers/unet")
    AutoencoderKL(block_out_channels=(8,), norm_num_groups=8, layers_per_block=1).save_pretrained(root / "sd-vae-ft-mse")
    CLIPVisionModelWithProjection(CLIPVisionConfig(
        hidden_size=8, intermediate_size=16, num_hidden_layers=1, num_attention_heads=2, image_size=16, patch_size=8,
        projection_dim=8)).save_pretrained(root / "sd-image-variations-diffusers/image_encoder")
    MotionAdapter(block_out_channels=(8, 16), motion_layers_per_block=1, motion_norm_num_groups=8,
                  motion_num_attention_heads=2).save_pretrained(root / "animatediff/motion")
    return root


def aa_findings(weights: Path, *extra: str) -> dict:
    cfg = compose_check("experiment=animate_anyone", f"paths.weights={weights}",
                        f"model.motion_adapter.path={weights}/animatediff/motion", *extra)
    return {f.slot.key: f for f in run_check(cfg)}


def test_every_animate_anyone_file_is_listed_and_matches(tiny_aa_weights) -> None:
    found = aa_findings(tiny_aa_weights)
    assert list(found) == AA_KEYS
    assert {key: f.status for key, f in found.items()} == dict.fromkeys(AA_KEYS, "ok")
    assert "tensors match the model" in found["model.codec.path"].detail


def test_moore_release_folder_is_listed_only_when_the_net_starts_from_it(tiny_aa_weights) -> None:
    assert "model.net.moore_dir" not in aa_findings(tiny_aa_weights)
    found = aa_findings(tiny_aa_weights, "model.net.init=moore")
    moore = found["model.net.moore_dir"]
    assert moore.status == "missing" and moore.slot.path == f"{tiny_aa_weights}/moore-animate-anyone"
    assert "model.motion_adapter.path" not in found  # stage 2 then reads motion_module.pth from moore_dir


def test_a_missing_folder_and_a_file_with_a_dropped_key_are_reported(tiny_aa_weights, tmp_path) -> None:
    import shutil

    weights = tmp_path / "weights"
    shutil.copytree(tiny_aa_weights, weights)
    shutil.rmtree(weights / "sd-vae-ft-mse")
    unet_file = weights / "sd-image-variations-diffusers/unet/diffusion_pytorch_model.safetensors"
    state = load_file(unet_file)
    dropped = sorted(state)[0]
    state["conv_in.weight"] = torch.zeros(8, 3, 3, 3)  # a shape the model does not have (4 input channels)
    del state[dropped]
    save_file(state, unet_file)
    found = aa_findings(weights)
    assert found["model.codec.path"].status == "missing"
    assert "huggingface.co/stabilityai/sd-vae-ft-mse" in found["model.codec.path"].slot.published_at
    unet = found["model.net.reference_unet.folder"]
    assert unet.status == "mismatch"
    assert f"missing: {dropped}" in unet.detail and "conv_in.weight file [8, 3, 3, 3] vs model [8, 4, 3, 3]" in unet.detail
    assert found["model.image_encoder.path"].status == "ok"
    text = report(list(found.values()), 1.0)
    assert "2 problem(s)" in text and "published at: Hugging Face: lambdalabs/sd-image-variations-diffusers" in text


def header_only_safetensors(path: Path, shapes: dict) -> Path:
    """A safetensors header naming `shapes` (what the doctor reads), standing in for a multi-GB release file."""
    header = json.dumps({k: {"dtype": "F32", "shape": list(v), "data_offsets": [0, 0]} for k, v in shapes.items()})
    path.write_bytes(struct.pack("<Q", len(header)) + header.encode())
    return path


def test_dynamicrafter_checkpoint_names_and_shapes_against_the_tiny_model(tmp_path) -> None:
    from hydra.utils import instantiate

    cfg = compose_check("experiment=dynamicrafter_demo", "protocols={}")
    module = instantiate(cfg.model, checkpoint=None, init_weights=None, stage="finetune")
    shapes = {k: tuple(v.shape) for k, v in module.official_state_dict().items()}
    good = header_only_safetensors(tmp_path / "good.safetensors", shapes)
    (finding,) = run_check(compose_check("experiment=dynamicrafter_demo", f"model.checkpoint={good}"))
    assert (finding.slot.key, finding.status) == ("model.checkpoint", "ok"), finding.detail
    assert "huggingface" in finding.slot.published_at.lower() or "Hugging Face" in finding.slot.published_at
    key = next(k for k in shapes if k.startswith("model.diffusion_model."))
    shapes[key] = (1, *shapes[key][1:]) if len(shapes[key]) > 1 else (shapes[key][0] + 1,)
    bad = header_only_safetensors(tmp_path / "bad.safetensors", shapes)
    (finding,) = run_check(compose_check("experiment=dynamicrafter_demo", f"model.checkpoint={bad}"))
    assert finding.status == "mismatch" and key in finding.detail


def test_read_shapes_of_a_torch_checkpoint_without_reading_it(tmp_path) -> None:
    path = tmp_path / "model.ckpt"
    torch.save({"state_dict": {"a.weight": torch.zeros(3, 2), "b": torch.zeros(5)}, "epoch": 1}, path)
    assert read_shapes(path) == {"a.weight": (3, 2), "b": (5,)}
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="model.ckpt: not readable"):
        read_shapes(path)


def test_the_command_exits_1_listing_each_missing_file_and_its_eval_protocol(tmp_path, capsys) -> None:
    from src.check import main

    cfg = compose_check("experiment=animate_anyone", "eval=animate_anyone_ubc", f"paths.weights={tmp_path}/none")
    with pytest.raises(SystemExit) as exit_info:
        main(cfg)  # hydra.main passes a given config straight through
    assert exit_info.value.code == 1
    out = capsys.readouterr().out
    for key in [*AA_KEYS, "eval.weights.i3d", "eval.weights.lpips_backbone"]:
        assert f"[   missing] {key}\n" in out, out
    assert "6 files: 6 missing" in out


@pytest.mark.skipif(not shared_data("dynamicrafter_manifest").is_dir(), reason="../shared/data/dynamicrafter_manifest not found")
def test_dynamicrafter_256_config_matches_the_released_checkpoint_layout(tmp_path) -> None:
    """The full 256 model built on the meta device has exactly the manifest's checkpoint names and shapes."""
    manifest = json.loads((shared_data("dynamicrafter_manifest") / "dynamicrafter_256.json").read_text())
    fake = header_only_safetensors(tmp_path / "model.safetensors", manifest["checkpoint_keys"])
    findings = run_check(compose_check("experiment=dynamicrafter", "protocols={}", f"model.checkpoint={fake}"))
    assert [(f.slot.key, f.status) for f in findings] == [("model.checkpoint", "ok")], findings[0].detail
