"""Strict offline loading of Rerender's SD1.5 + ControlNet weights (src/rerender/sd_loading.py).

Tiny random models are saved as diffusers folders, as original-layout single files (.safetensors, Lightning
.ckpt) and as a ControlNet-1.0 `control_sd15_*.pth` (see tests/unit/ldm_layout.py for how those files are
written); each must load back bit-exactly, and a damaged or missing file must fail naming the file, the key
and the config key.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from safetensors.torch import save_file

from src.config import register_resolvers
from src.models.weights import WeightLoadError
from src.rerender.ldm_checkpoint import convert_component
from src.rerender.sd_components import SDComponents
from src.rerender.sd_loading import (
    SD15_CONFIGS,
    load_controlnet,
    load_sd_components,
    load_stable_diffusion,
    resolve_dtype,
)
from tests.conftest import ROOT, shared_data
from tests.unit.ldm_layout import (
    control_sd15_file,
    controlnet_to_ldm,
    save_diffusers_folder,
    sd_to_ldm,
    tiny_models,
    vae_to_ldm,
)

register_resolvers()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[dict[str, torch.nn.Module], Path]:
    """Tiny models and every file layout of them, written once for this module."""
    models = tiny_models()
    root = save_diffusers_folder(models, tmp_path_factory.mktemp("rerender_sd"))
    save_file(sd_to_ldm(models), str(root / "civitai.safetensors"))
    torch.save({"state_dict": sd_to_ldm(models), "global_step": 7}, root / "civitai.ckpt")
    torch.save(control_sd15_file(models), root / "control_sd15_hed.pth")
    return models, root


def assert_same(loaded: torch.nn.Module, reference: torch.nn.Module) -> None:
    got, want = loaded.state_dict(), reference.state_dict()
    assert got.keys() == want.keys()
    differing = [k for k in want if not torch.equal(got[k], want[k])]
    assert not differing, f"{len(differing)} tensors differ, e.g. {differing[:3]}"


def test_diffusers_folders_load_bit_exactly(tiny) -> None:
    models, root = tiny
    sd = load_stable_diffusion(root / "sd")
    for name in ("unet", "vae", "text_encoder"):
        assert_same(getattr(sd, name), models[name])
    assert sd.tokenizer("abc").input_ids[0] == sd.tokenizer.bos_token_id
    assert sd.scheduler_config["beta_schedule"] == "scaled_linear"  # no scheduler/ in the folder: SD1.5's
    assert_same(load_controlnet(root / "controlnet", "canny"), models["controlnet"])


@pytest.mark.parametrize("name", ["civitai.safetensors", "civitai.ckpt"])
def test_single_file_checkpoints_load_bit_exactly(tiny, name: str) -> None:
    models, root = tiny
    sd = load_stable_diffusion(root / name, config_dir=root / "sd", tokenizer=root / "sd" / "tokenizer")
    for part in ("unet", "vae", "text_encoder"):
        assert_same(getattr(sd, part), models[part])


def test_control_sd15_pth_and_a_bare_control_file_load_bit_exactly(tiny, tmp_path) -> None:
    models, root = tiny
    config = root / "controlnet" / "config.json"
    assert_same(load_controlnet(root / "control_sd15_hed.pth", "hed", config=config), models["controlnet"])
    bare = {k.removeprefix("control_model."): v for k, v in controlnet_to_ldm(models["controlnet"]).items()}
    torch.save(bare, tmp_path / "control_v11p_sd15_canny.pth")  # ControlNet-1.1 style: no prefix
    assert_same(
        load_controlnet(tmp_path / "control_v11p_sd15_canny.pth", "canny", config=config),
        models["controlnet"],
    )


def _write(state: dict[str, torch.Tensor], path: Path) -> Path:
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    return path


@pytest.mark.parametrize(
    ("damage", "named"),
    [
        ("rename", "model.diffusion_model.input_blocks.1.0.in_layers.9.weight"),  # a typo in one file key
        ("drop", "down_blocks.0.resnets.0.conv1.weight"),  # a missing tensor: the model key left empty
        ("stray", "lora_unet_down.alpha"),  # a key of no SD1.5 part
    ],
)
def test_damaged_single_file_names_the_key_the_file_and_the_config_key(tiny, tmp_path, damage, named) -> None:
    models, root = tiny
    state = sd_to_ldm(models)
    key = "model.diffusion_model.input_blocks.1.0.in_layers.2.weight"
    if damage == "rename":
        state[named] = state.pop(key)
    elif damage == "drop":
        del state[key]
    else:
        state[named] = torch.zeros(1)
    path = _write(state, tmp_path / f"{damage}.safetensors")
    with pytest.raises(WeightLoadError) as err:
        load_stable_diffusion(path, config_dir=root / "sd", tokenizer=root / "sd" / "tokenizer")
    message = str(err.value)
    assert named in message and str(path) in message and "model.sd.checkpoint" in message, message


def test_damaged_control_file_names_the_missing_key(tiny, tmp_path) -> None:
    models, root = tiny
    state = control_sd15_file(models)
    del state["control_model.zero_convs.2.0.bias"]
    torch.save(state, tmp_path / "control_sd15_canny.pth")
    with pytest.raises(WeightLoadError, match=r"controlnet_down_blocks\.2\.bias") as err:
        load_controlnet(
            tmp_path / "control_sd15_canny.pth", "canny", config=root / "controlnet" / "config.json"
        )
    assert "model.controlnet.checkpoint" in str(err.value)


def test_shape_mismatch_against_the_config_is_an_error(tiny) -> None:
    _, root = tiny  # the tiny file against the real SD1.5 configs: every shape differs
    with pytest.raises(WeightLoadError, match="shape mismatches|do not match"):
        load_stable_diffusion(root / "civitai.safetensors", tokenizer=root / "sd" / "tokenizer")


def _experiment(overrides: list[str]):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose(config_name="sample", overrides=["experiment=rerender", *overrides])


def test_load_sd_components_from_the_experiment_config_with_a_vae_override(tiny, tmp_path) -> None:
    models, root = tiny
    other_vae = tiny_models(seed=1)["vae"]  # the official code swaps in vae-ft-mse: a bare-named VAE file
    bare = {k.removeprefix("first_stage_model."): v for k, v in vae_to_ldm(other_vae).items()}
    vae_file = _write(bare, tmp_path / "vae-ft-mse-840000-ema-pruned.safetensors")
    cfg = _experiment(
        [
            f"model.sd.checkpoint={root / 'civitai.safetensors'}",
            f"model.sd.config_dir={root / 'sd'}",
            f"model.sd.tokenizer={root / 'sd' / 'tokenizer'}",
            f"model.sd.vae={vae_file}",
            "model.controlnet.control_type=canny",
            f"model.controlnet.checkpoint={root / 'controlnet'}",
        ]
    )
    parts = load_sd_components(cfg.model, device="cpu")
    assert isinstance(parts, SDComponents) and parts.control_type == "canny"
    assert_same(parts.unet, models["unet"])
    assert_same(parts.vae, other_vae)
    assert_same(parts.controlnet, models["controlnet"])
    assert parts.scheduler_config["num_train_timesteps"] == 1000
    assert all(p.dtype == torch.float32 for p in parts.unet.parameters())  # dtype=auto on the CPU


def test_missing_files_name_the_config_key(tiny, tmp_path) -> None:
    _, root = tiny
    cfg = _experiment([f"paths.weights={tmp_path}"])
    with pytest.raises(FileNotFoundError, match=r"model\.sd\.checkpoint") as err:
        load_sd_components(cfg.model)
    assert str(tmp_path / "sd15") in str(err.value)
    with pytest.raises(FileNotFoundError, match=r"model\.sd\.tokenizer"):
        load_stable_diffusion(root / "civitai.safetensors", config_dir=root / "sd")
    with pytest.raises(FileNotFoundError, match=r"model\.controlnet\.checkpoint.*control_sd15_hed\.pth"):
        load_controlnet(tmp_path / "control_sd15_hed.pth", "hed")


def test_dtype_choice() -> None:
    assert resolve_dtype("auto", "cpu") == torch.float32
    assert resolve_dtype("auto", "cuda") == torch.float16
    assert resolve_dtype("bf16", "cuda") == torch.bfloat16
    with pytest.raises(ValueError, match="fp32"):
        resolve_dtype("fp16", "cpu")


def test_shipped_sd15_configs_build_the_published_models() -> None:
    """Parameter counts of the public SD1.5 UNet / VAE / CLIP-L text encoder; the ControlNet's encoder is a
    copy of the UNet's (same names and shapes), as ControlNet-1.0 was built."""
    from diffusers import AutoencoderKL, ControlNetModel, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    def config(name: str) -> dict:
        return json.loads((SD15_CONFIGS / name / "config.json").read_text())

    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(config("unet"))
        vae = AutoencoderKL.from_config(config("vae"))
        text = CLIPTextModel(CLIPTextConfig(**config("text_encoder")))
        controlnet = ControlNetModel.from_config(config("controlnet"))
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert (count(unet), count(vae), count(text)) == (859_520_964, 83_653_863, 123_060_480)
    shared = ("conv_in.", "time_embedding.", "down_blocks.", "mid_block.")
    unet_shapes = {k: v.shape for k, v in unet.state_dict().items() if k.startswith(shared)}
    cn_shapes = {k: v.shape for k, v in controlnet.state_dict().items() if k.startswith(shared)}
    assert cn_shapes == unet_shapes


def test_weights_doctor_lists_the_rerender_files(tiny, tmp_path) -> None:
    from src.check import run_check
    from src.rerender.hed import HEDNet

    _, root = tiny
    torch.save(HEDNet().state_dict(), tmp_path / "ControlNetHED.pth")
    keys = ("model.sd.checkpoint", "model.controlnet.checkpoint", "model.control_map.hed_checkpoint")
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(
            config_name="check",
            overrides=[
                "experiment=rerender",
                f"model.sd.checkpoint={root / 'sd'}",
                f"model.control_map.hed_checkpoint={tmp_path / 'ControlNetHED.pth'}",
            ],
        )
        canny = compose(
            config_name="check", overrides=["experiment=rerender", "model.controlnet.control_type=canny"]
        )
    found = {f.slot.key: f.status for f in run_check(cfg) if f.slot.key.startswith(("model.sd", "model.controlnet", "model.control_map"))}
    assert found == dict(zip(keys, ("present", "missing", "ok"), strict=True)), found
    assert "model.control_map.hed_checkpoint" not in {f.slot.key for f in run_check(canny)}  # HED unused


@pytest.mark.skipif(not shared_data("dynamicrafter_manifest").is_dir(), reason="../shared/data not found")
def test_the_released_kl_f8_vae_layout_converts_strictly_at_full_size() -> None:
    """No SD1.5 file is available offline, but DynamiCrafter's release stores the same kl-f8 autoencoder under the
    same original names (`first_stage_model.*`, 248 tensors, 83,653,863 values, as SD1.5's VAE). Their real names
    and shapes convert through our single-file path onto the shipped SD1.5 VAE config with nothing left over."""
    from diffusers import AutoencoderKL

    manifest = json.loads((shared_data("dynamicrafter_manifest") / "dynamicrafter_512.json").read_text())["keys"]
    released = {k: torch.empty(shape) for k, shape in manifest.items() if k.startswith("first_stage_model.")}
    config = json.loads((SD15_CONFIGS / "vae" / "config.json").read_text())
    with torch.device("meta"):
        probe = AutoencoderKL.from_config(config)
    converted = convert_component(released, "vae", config, probe, "DynamiCrafter 512 release (manifest)")
    expected = {k: tuple(v.shape) for k, v in probe.state_dict().items()}
    assert {k: tuple(v.shape) for k, v in converted.items()} == expected
    assert sum(v.numel() for v in released.values()) == 83_653_863
