"""`model.net.init=moore` through the entry points: `src.train` fine-tunes stage 2 (then runs the held-out
evaluation) and stage 1 from a Moore-AnimateAnyone release folder (tiny, with the key layout of Moore's files);
`src.sample` and `src.evaluate` model mode animate with the release as is. The release's values are the Moore
reference test's fake weights. Where a test says "as loaded", the entry point's output is compared with the same
computation on the net `load_moore_net` returns, built outside the entry point (`module_around`)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from safetensors.torch import load_file

from src.config import register_resolvers, stage_config
from src.models.moore import load_moore_net
from src.models.motion import convert_original_motion_state_dict
from tests.conftest import ROOT, run_entry
from tests.integration.test_ddp_equivalence import per_step_losses
from tests.unit.moore_fake_weights import fake_state_dict

REFERENCE = Path(__file__).resolve().parents[1] / "data" / "moore_reference" / "reference.pt"
# the reference's Pose Guider (Moore's kwargs, as make_reference.py built it) in our config's terms
_GUIDER = torch.load(REFERENCE, weights_only=False)["pose_guider"]
GUIDER = [
    f"model.net.pose_guider.block_channels={json.dumps(_GUIDER['block_out_channels'])}",
    f"model.net.pose_guider.out_channels={_GUIDER['conditioning_embedding_channels']}",
]


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
        *GUIDER,
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
        *GUIDER,
        f"eval.test_set.shards={shards.heldout[0]}", "eval.test_set.size=[32,32]", "eval.clip.num_frames=4",
        "eval.generator.num_steps=2", "eval.metrics.fvd=null", "eval.metrics.lpips=null", "eval.device=cpu",
    )
    results = json.loads((run_dir / "metrics.json").read_text())
    assert results["mode"] == "model" and results["counts"]["paired"] == 1
    assert 0 < results["metrics"]["psnr"] < 100


def compose_entry(config_name: str, overrides: list[str]) -> DictConfig:
    """The config an entry point composes from `overrides` (conf/<config_name>.yaml)."""
    register_resolvers()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose(config_name=config_name, overrides=overrides)


def moore_net(weights: Path, **kwargs):
    """The release loaded directly by `load_moore_net`, with the reference's configs."""
    ref = torch.load(REFERENCE, weights_only=False)
    folder = weights / "moore-animate-anyone"
    return load_moore_net(folder, ref["unet_config"], ref["pose_guider"], ref["motion_module_kwargs"], **kwargs)


def module_around(cfg: DictConfig, stage: str, net: torch.nn.Module):
    """The experiment's module for `stage` (its stage settings merged) holding `net` instead of the one
    `model.net.init` builds; returns it with the stage's config."""
    scfg = stage_config(cfg, stage)
    OmegaConf.resolve(scfg)  # model.motion_adapter interpolates model.net, which `net` replaces
    return instantiate(scfg.model, stage=stage, init_weights=None, seed=cfg.seed, net=net), scfg


def test_sample_animates_with_the_release_as_loaded(tmp_path, weights):
    """`src.sample` with init=moore and no sample.weights gives, frame for frame, the video of the directly loaded
    release (stage 2, motion modules included) at the same seed; one changed motion-module tensor changes it."""
    from PIL import Image

    from src.data.video_io import decode_mp4, encode_mp4, write_mp4
    from src.inference.animate_anyone import load_pose_video
    from src.inference.common import load_image
    from src.trainers.callbacks import to_uint8_frames

    rng = np.random.default_rng(0)
    reference = tmp_path / "hero.png"
    Image.fromarray((rng.random((32, 32, 3)) * 255).astype(np.uint8)).save(reference)
    pose = np.zeros((4, 32, 32, 3), dtype=np.uint8)
    for f in range(4):
        pose[f, 4:28, 4 + 2 * f : 8 + 2 * f] = (255, 0, 0)  # a limb sliding right
    pose_path = write_mp4(tmp_path / "dance.mp4", pose, fps=8)
    overrides = [
        "experiment=animate_anyone", f"paths.weights={weights}", "model.net.init=moore", *GUIDER,
        f"sample.reference={reference}", f"sample.pose_video={pose_path}", "sample.size=[32,32]",
        "sample.sampling.num_steps=2",
    ]
    out = tmp_path / "out"
    run_entry("src.sample", *overrides, f"sample.out={out}")
    settings = json.loads((out / "samples.json").read_text())["settings"]
    assert settings["net_init"] == "moore" and settings["weights"] is None and settings["stage"] == "temporal"
    sampled = decode_mp4((out / "hero_dance.mp4").read_bytes())

    cfg = compose_entry("sample", overrides)
    net = moore_net(weights)
    assert net.stage == "temporal"
    module, _ = module_around(cfg, "temporal", net)
    image = load_image(reference, (32, 32))[None]
    poses, fps, _ = load_pose_video(pose_path, (32, 32), None, 1)

    def animate() -> np.ndarray:
        generator = torch.Generator().manual_seed(int(cfg.seed))
        video = module.eval().animate(image, poses[None], generator=generator, num_steps=2)
        return decode_mp4(encode_mp4(to_uint8_frames(video[0]), fps))

    np.testing.assert_array_equal(animate(), sampled)
    with torch.no_grad():
        net.denoising_unet.down_blocks[0].motion_modules[0].proj_out.weight.mul_(3.0)
    assert np.abs(animate().astype(int) - sampled).max() > 2


def test_stage1_finetune_starts_from_the_release_and_its_weights_load_back(tmp_path, weights, shards):
    """stage=spatial from the release: the logged loss of step 0 is the directly loaded release's loss on the run's
    first batch; the trained weights differ from the release's and load back strictly: final/net.safetensors
    through `src.sample` (init=moore, sample.weights), the exported checkpoint into a release-built net."""
    from PIL import Image

    from src.data.video_io import write_mp4
    from src.export import load_exported
    from src.export import main as export
    from src.models.weights_io import load_net_weights
    from src.trainers.runner import build_train_loader

    overrides = [
        "experiment=animate_anyone", "stage=spatial", f"paths.weights={weights}", "model.net.init=moore", *GUIDER,
        f"data.train_shards={shards.train[0]}", "data.num_workers=0", "stages.spatial.global_batch_size=2",
        "stages.spatial.data.batch_size=2", "stages.spatial.data.size=[32,32]", "stages.spatial.data.margin=2",
    ]
    run_dir = tmp_path / "run"
    run_entry(
        "src.train", *overrides, "logger=csv", f"hydra.run.dir={run_dir}", "data.val.num_videos=0",
        "evaluation.heldout=false", "stages.spatial.trainer.max_steps=2", "trainer.log_every_n_steps=1",
    )
    losses = per_step_losses(run_dir, "spatial")
    assert len(losses) == 2

    cfg = compose_entry("train", overrides)
    module, scfg = module_around(cfg, "spatial", moore_net(weights, with_motion_modules=False))
    batch = next(iter(build_train_loader(scfg, scfg.data.train_shards, rank=0)))
    with torch.no_grad():
        assert losses[0] == pytest.approx(float(module.training_step(batch, 0)), rel=1e-5)
    released = module.net.state_dict()
    trained = load_file(str(run_dir / "spatial" / "final" / "net.safetensors"))
    assert set(trained) == set(released)
    moved = {k for k in trained if not torch.equal(trained[k], released[k])}
    assert any(k.startswith("denoising_unet.") for k in moved) and any(k.startswith("pose_guider.") for k in moved)

    exported, net = tmp_path / "export", moore_net(weights, with_motion_modules=False)
    export([str(run_dir / "spatial" / "checkpoints" / "last.ckpt"), str(exported)])
    load_exported(net, exported)  # frozen keys left out of the checkpoint keep the release's values
    assert all(torch.equal(v, trained[k]) for k, v in net.state_dict().items())
    load_net_weights(net, run_dir / "spatial" / "final" / "net.safetensors")

    out = tmp_path / "sampled"
    pose_path = write_mp4(tmp_path / "pose.mp4", np.zeros((2, 32, 32, 3), dtype=np.uint8), fps=8)
    Image.fromarray(np.full((32, 32, 3), 128, dtype=np.uint8)).save(tmp_path / "ref.png")
    run_entry(
        "src.sample", "experiment=animate_anyone", f"paths.weights={weights}", "model.net.init=moore", *GUIDER,
        "sample.stage=spatial", f"sample.weights={run_dir}", f"sample.reference={tmp_path / 'ref.png'}",
        f"sample.pose_video={pose_path}", "sample.size=[32,32]", "sample.sampling.num_steps=1", f"sample.out={out}",
    )
    settings = json.loads((out / "samples.json").read_text())["settings"]
    assert settings["weights"] == str(run_dir / "spatial" / "final" / "net.safetensors")
    assert settings["stage"] == "spatial" and settings["net_init"] == "moore"
