"""`experiment=animate_anyone` (the full-size config) through the entry point, with tiny weight folders laid
out exactly as the README tells users: diffusers UNet, VAE and MotionAdapter folders and a transformers CLIP
image encoder, all loaded strictly. A folder with a missing key fails and the error names the key."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from tests.conftest import run_entry


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    from src.models.motion import build_motion_adapter

    root = tmp_path_factory.mktemp("weights")
    torch.manual_seed(0)
    UNet2DConditionModel(
        sample_size=16, in_channels=4, out_channels=4, block_out_channels=(32, 64), layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D",) * 2, up_block_types=("CrossAttnUpBlock2D",) * 2,
        cross_attention_dim=32, attention_head_dim=2, norm_num_groups=8,
    ).save_pretrained(root / "sd-image-variations-diffusers" / "unet")
    CLIPVisionModelWithProjection(
        CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                         image_size=32, patch_size=8, projection_dim=32)
    ).save_pretrained(root / "sd-image-variations-diffusers" / "image_encoder")
    AutoencoderKL(
        in_channels=3, out_channels=3, block_out_channels=(16, 32), latent_channels=4, norm_num_groups=8,
        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2, sample_size=32,
    ).save_pretrained(root / "sd-vae-ft-mse")
    build_motion_adapter([32, 64], motion_layers_per_block=1, num_attention_heads=2, norm_num_groups=8).save_pretrained(
        root / "animatediff" / "tiny_motion_adapter"
    )
    return root


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    from src.data.demo_dataset import ensure_demo_shards

    return ensure_demo_shards(tmp_path_factory.mktemp("shards"), num_train_videos=4, num_heldout_videos=1,
                              num_frames=12, size=32, samples_per_shard=4)


def overrides(weights: Path, shards, run_dir: Path) -> list[str]:
    return [
        "experiment=animate_anyone", "logger=csv", f"paths.weights={weights}", f"hydra.run.dir={run_dir}",
        f"data.train_shards={shards.train[0]}", f"data.heldout_shards={shards.heldout[0]}",
        "data.num_workers=0", "data.val.num_videos=1", "data.val.num_frames=4", "data.val.stride=2",
        f"model.motion_adapter.path={weights}/animatediff/tiny_motion_adapter",
        "model.net.pose_guider.block_channels=[16,32]", "model.net.pose_guider.out_channels=32",
        "model.sampling.num_steps=2",
        "stages.spatial.global_batch_size=4", "stages.spatial.data.batch_size=2", "stages.spatial.data.size=[32,32]",
        "stages.spatial.data.margin=4", "stages.spatial.trainer.max_steps=2", "trainer.val_check_interval=1",
        "stages.temporal.global_batch_size=1", "stages.temporal.data.size=[32,32]", "stages.temporal.data.num_frames=4",
        "stages.temporal.data.stride=2", "stages.temporal.trainer.max_steps=1",
    ]


def test_full_config_trains_both_stages_from_local_weight_folders(tmp_path, weights, shards):
    run_dir = tmp_path / "run"
    run_entry("src.train", *overrides(weights, shards, run_dir))
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["steps"] == {"spatial": 2, "temporal": 1}
    spatial = load_file(summary["weights"]["spatial"])
    temporal = load_file(summary["weights"]["temporal"])
    assert any("motion_modules" in k for k in temporal) and not any("motion_modules" in k for k in spatial)


def test_missing_key_in_a_weight_folder_is_named(tmp_path, weights, shards):
    import shutil

    broken = tmp_path / "weights"
    shutil.copytree(weights, broken)
    unet_file = broken / "sd-image-variations-diffusers" / "unet" / "diffusion_pytorch_model.safetensors"
    state = load_file(unet_file)
    state.pop("conv_in.weight")
    save_file(state, unet_file)
    proc = run_entry("src.train", *overrides(broken, shards, tmp_path / "run"), check=False)
    assert proc.returncode != 0
    assert "conv_in.weight" in proc.stderr and "missing" in proc.stderr.lower()

    no_vae = tmp_path / "weights_no_vae"
    shutil.copytree(weights, no_vae)
    shutil.rmtree(no_vae / "sd-vae-ft-mse")
    proc = run_entry("src.train", *overrides(no_vae, shards, tmp_path / "run2"), check=False)
    assert proc.returncode != 0 and "sd-vae-ft-mse" in proc.stderr and "model.codec.path" in proc.stderr
