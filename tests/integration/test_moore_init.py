"""`model.net.init=moore` through the entry points: `src.train` fine-tunes stage 2 from a Moore-AnimateAnyone
release folder (tiny, with the key layout of Moore's files) and runs the held-out evaluation; `src.evaluate`
model mode animates with the release as is. The release's values are the Moore reference test's fake weights."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from src.models.motion import convert_original_motion_state_dict
from tests.conftest import run_entry
from tests.unit.moore_fake_weights import fake_state_dict

REFERENCE = Path(__file__).resolve().parents[1] / "data" / "moore_reference" / "reference.pt"


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    from diffusers import AutoencoderKL
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    ref = torch.load(REFERENCE, weights_only=False)
    root = tmp_path_factory.mktemp("weights")
    torch.manual_seed(0)
    unet = root / "sd-image-variations-diffusers" / "unet"
    unet.mkdir(parents=True)
    (unet / "config.json").write_text(json.dumps(ref["unet_config"]))  # init=moore reads only the config
    CLIPVisionModelWithProjection(
        CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                         image_size=32, patch_size=8, projection_dim=16)
    ).save_pretrained(root / "sd-image-variations-diffusers" / "image_encoder")
    AutoencoderKL(  # 8x downsampling, as SD's VAE, to match Moore's Pose Guider
        in_channels=3, out_channels=3, block_out_channels=(8, 8, 8, 8), latent_channels=4, norm_num_groups=4,
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4, sample_size=32,
    ).save_pretrained(root / "sd-vae-ft-mse")
    moore = root / "moore-animate-anyone"
    moore.mkdir()
    for name, shapes in ref["files"].items():
        state = fake_state_dict({k: s for k, s in shapes.items() if not k.endswith("pos_encoder.pe")}, torch.float32)
        state.update({k: ref["pos_encoder_pe"][s[-1]].float() for k, s in shapes.items() if k.endswith("pos_encoder.pe")})
        torch.save(state, moore / f"{name}.pth")
    return root


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    from src.data.demo_dataset import ensure_demo_shards

    return ensure_demo_shards(tmp_path_factory.mktemp("shards"), num_train_videos=2, num_heldout_videos=1,
                              num_frames=8, size=32, samples_per_shard=4)


def test_stage2_and_heldout_evaluation_start_from_moores_release(tmp_path, weights, shards):
    """stage=temporal straight from the release (its stage-1 weights are in the net), then the held-out proof."""
    run_dir = tmp_path / "run"
    run_entry(
        "src.train", "experiment=animate_anyone", "stage=temporal", "logger=csv", f"paths.weights={weights}",
        f"hydra.run.dir={run_dir}", "model.net.init=moore", f"data.train_shards={shards.train[0]}",
        f"data.heldout_shards={shards.heldout[0]}", "data.num_workers=0", "data.val.num_videos=0",
        "model.net.pose_guider.block_channels=[4,8,8,16]", "model.net.pose_guider.out_channels=32",
        "model.sampling.num_steps=2", "evaluation=animate_anyone_heldout", "evaluation.num_videos=1",
        "evaluation.num_frames=2", "evaluation.start_frame=1",
        "stages.temporal.global_batch_size=1", "stages.temporal.data.size=[32,32]", "stages.temporal.data.num_frames=4",
        "stages.temporal.data.stride=1", "stages.temporal.trainer.max_steps=1",
    )
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["steps"] == {"temporal": 1}
    assert set(summary["metrics"]["heldout"]) == {"trained", "untrained", "repeat_reference"}
    moore = weights / "moore-animate-anyone"
    temporal = load_file(summary["weights"]["temporal"])
    guider = torch.load(moore / "pose_guider.pth")
    assert all(torch.equal(temporal[f"pose_guider.{k}"], v) for k, v in guider.items())  # frozen in stage 2
    reference = torch.load(moore / "reference_unet.pth")
    assert set(k for k in temporal if k.startswith("reference_unet.")) == {f"reference_unet.{k}" for k in reference}
    motion = convert_original_motion_state_dict(torch.load(moore / "motion_module.pth"))
    key = "down_blocks.0.motion_modules.0.proj_out.weight"
    # Moore's pretrained motion modules are kept (not zeroed) by default, then trained one step at lr 1e-5
    assert motion[key].abs().sum() > 1
    torch.testing.assert_close(temporal[f"denoising_unet.{key}"], motion[key], rtol=0, atol=1e-3)


def test_evaluate_model_mode_animates_with_the_release_as_is(tmp_path, weights, shards):
    run_dir = tmp_path / "eval"
    run_entry(
        "src.evaluate", "eval=animate_anyone_ubc", "eval.mode=model", "model=animate_anyone", "logger=none",
        f"paths.weights={weights}", "model.net.init=moore", f"hydra.run.dir={run_dir}",
        "model.net.pose_guider.block_channels=[4,8,8,16]", "model.net.pose_guider.out_channels=32",
        f"eval.test_set.shards={shards.heldout[0]}", "eval.test_set.size=[32,32]", "eval.clip.num_frames=4",
        "eval.generator.num_steps=2", "eval.metrics.fvd=null", "eval.metrics.lpips=null", "eval.device=cpu",
    )
    results = json.loads((run_dir / "metrics.json").read_text())
    assert results["mode"] == "model" and results["counts"]["paired"] == 1
    assert 0 < results["metrics"]["psnr"] < 100
