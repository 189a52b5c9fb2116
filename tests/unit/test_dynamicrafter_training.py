"""DynamiCrafterModule: conditioning dropout and condition frames, the training step's inputs, learning on a fixed
batch, fs/fps conditioning, temporal freezing, frozen parts out of checkpoints, sampling shapes, and a strict
load of a tiny fake official checkpoint (built in the release's key layout)."""

from __future__ import annotations

import copy

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf

from src.models.dynamicrafter.attention import TemporalTransformer
from src.models.dynamicrafter.blocks import TemporalConvBlock
from src.models.weights import WeightLoadError
from src.trainers.sample_draws import SampleDraws
from tests.conftest import ROOT, shared_data

T, SIZE = 4, 16  # the tiny demo model shrunk to 4 frames at 16x16 (mini_cfg) to keep the file fast


def tiny_model_cfg(**overrides):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=["experiment=dynamicrafter_demo"])
    model = OmegaConf.to_container(cfg.model, resolve=True)
    model.update(overrides)
    return OmegaConf.create(model)


def mini_cfg():
    """The demo's tiny config with T frames (the query transformer fixes the video length)."""
    cfg = tiny_model_cfg()
    cfg.net.unet.temporal_length = T
    cfg.net.image_proj.video_length = T
    return cfg


@pytest.fixture(scope="module")
def tiny_cfg():
    return mini_cfg()


@pytest.fixture(scope="module")
def module(tiny_cfg):
    torch.manual_seed(0)
    return instantiate(tiny_cfg, stage="finetune", init_weights=None)


def make_batch(b: int = 4, seed: int = 0) -> dict:
    gen = torch.Generator().manual_seed(seed)
    return {
        "video": torch.rand(b, 3, T, SIZE, SIZE, generator=gen) * 2 - 1,
        "caption": [f"a red star moves left number {i}" for i in range(b)],
        "frame_stride": torch.tensor([1, 2, 3, 4][:b] + [2] * max(0, b - 4)),
        "fps": torch.full((b,), 7.9),
        "key": [f"clip{i}" for i in range(b)],
        "skipped": [{"undecodable": 1}] + [{}] * (b - 1),
        "sample_index": torch.arange(b),
    }


def test_dropout_proportions_over_many_draws(module):
    n = 200_000
    drop_text, drop_image = module.conditioning_dropout(SampleDraws(0, torch.arange(n)))
    text_only = (drop_text & ~drop_image).float().mean()
    both = (drop_text & drop_image).float().mean()
    image_only = (~drop_text & drop_image).float().mean()
    kept = (~drop_text & ~drop_image).float().mean()
    for value in (text_only, both, image_only):
        assert abs(float(value) - 0.05) < 0.003
    assert abs(float(kept) - 0.85) < 0.004


def test_condition_frame_is_drawn_uniformly_per_sample(module):
    index = module.condition_frame_indices(SampleDraws(0, torch.arange(80_000)), T)
    counts = torch.bincount(index, minlength=T).float() / index.numel()
    assert counts.shape == (T,) and torch.all((counts - 1 / T).abs() < 0.01)
    fixed = copy.copy(module)
    fixed.rand_cond_frame = False
    assert torch.equal(fixed.condition_frame_indices(SampleDraws(0, torch.arange(16)), T), torch.zeros(16, dtype=torch.long))


def test_training_step_inputs_concat_never_dropped(module):
    """With p = 1/3 every sample drops something; the concatenated latent is always the condition frame's."""
    batch = make_batch(6)
    seen: dict = {}

    def record(name, convert):
        def hook(_module, args):
            seen.setdefault(name, convert(args))  # a pre-hook returning None leaves the inputs alone

        return hook

    context = module.net.context
    module.net.context = lambda text, image: (seen.setdefault("context", (text, image)), context(text, image))[1]
    hooks = [
        module.text_encoder.register_forward_pre_hook(record("captions", lambda a: list(a[0]))),
        module.image_encoder.register_forward_pre_hook(record("images", lambda a: a[0].clone())),
        module.net.register_forward_pre_hook(record("net", lambda a: [x.clone() for x in a[:3]])),
    ]
    original = module.uncond_prob
    module.uncond_prob = 1.0 / 3.0
    try:
        torch.manual_seed(3)
        loss = module.training_step(batch, 0)
    finally:
        module.uncond_prob = original
        del module.net.context
        for h in hooks:
            h.remove()
    assert torch.isfinite(loss)
    latents = module.encode_video(batch["video"])
    noisy, _, concat = seen["net"]
    assert noisy.shape == concat.shape == latents.shape
    for i in range(6):
        # the same frame j feeds the concatenated latent (repeated over t) and, unless dropped, CLIP
        matches = [j for j in range(T) if torch.allclose(concat[i, :, 0], latents[i, :, j])]
        assert len(matches) == 1 and torch.equal(concat[i], concat[i, :, :1].expand_as(concat[i]))
        # dropout on the device: every caption and condition frame is encoded, and a dropped row's embedding
        # becomes that of "" or of a zero image
        assert torch.equal(seen["images"][i], batch["video"][i, :, matches[0]])
        assert seen["captions"] == list(batch["caption"])
        text, image = seen["context"][0][i], seen["context"][1][i]
        image_dropped = torch.equal(image, module.encode_image(torch.zeros_like(seen["images"][:1]))[0])
        assert image_dropped or torch.allclose(image, module.encode_image(seen["images"][i : i + 1])[0], atol=1e-5)
        text_dropped = torch.equal(text, module.encode_text([""])[0])
        assert text_dropped or torch.allclose(text, module.encode_text([batch["caption"][i]])[0], atol=1e-5)
        assert text_dropped or image_dropped  # p = 1/3: r < 2p drops text, r >= p drops the image


def test_fs_and_fps_conditioning(module):
    device = torch.device("cpu")
    assert module.fs_values(3, device, frame_stride=torch.tensor([1, 2, 6]), fps=None).tolist() == [1, 2, 6]
    assert module.fs_values(2, device, frame_stride=None) is None  # the UNet's default_fs
    fps_module = copy.copy(module)
    fps_module.fs_condition = "fps"
    assert fps_module.fs_values(2, device, fps=torch.tensor([7.9, 24.0])).tolist() == [7, 24]
    assert fps_module.fs_values(2, device, fps=10).tolist() == [10, 10]


def test_loss_decreases_on_a_fixed_batch():
    torch.manual_seed(0)
    model = instantiate(mini_cfg(), stage="finetune", init_weights=None)
    batch = make_batch(2)
    optimizer = torch.optim.AdamW(model.trainable_parameters(), lr=3e-3)
    losses = []
    for _ in range(8):
        # the same batch (same sample_index): same timesteps, noise, dropout and condition frames every step
        loss = model.training_step(batch, 0)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.7 * losses[0], losses


def test_freeze_temporal_and_frozen_parts_stay_out_of_checkpoints(tiny_cfg):
    torch.manual_seed(0)
    model = instantiate(tiny_cfg, stage="finetune", init_weights=None, freeze_temporal=True)
    temporal = {id(p) for m in model.net.temporal_modules() for p in m.parameters()}
    assert temporal and any(isinstance(m, TemporalTransformer) for m in model.net.temporal_modules())
    assert any(isinstance(m, TemporalConvBlock) for m in model.net.temporal_modules())
    trainable = model.trainable_parameters()
    assert trainable and not any(id(p) in temporal for p in trainable)
    assert all(p.requires_grad for p in model.net.image_proj.parameters())
    optimizer = model.configure_optimizers()
    optimizer = optimizer["optimizer"] if isinstance(optimizer, dict) else optimizer  # tiny config warms up
    assert {id(p) for g in optimizer.param_groups for p in g["params"]} == {id(p) for p in trainable}

    checkpoint = {"state_dict": model.state_dict()}
    model.on_save_checkpoint(checkpoint)
    saved = set(checkpoint["state_dict"])
    names = {id(p): f"net.{n}" for n, p in model.net.named_parameters()}
    assert saved == {names[id(p)] for p in trainable}
    assert not any(k.startswith(("text_encoder.", "image_encoder.", "codec.")) for k in saved)
    # resume: the frozen keys are filled back and the whole state loads strictly
    model.on_load_checkpoint(checkpoint)
    model.load_state_dict(checkpoint["state_dict"], strict=True)


def test_sample_any_batch_size_joint_and_separate_guidance(module):
    module.eval()
    image = torch.rand(3, 3, SIZE, SIZE) * 2 - 1
    captions = ["a", "b", "c"]
    video = module.sample(
        image, captions, num_steps=2, guidance_scale=2.0, generator=torch.Generator().manual_seed(0)
    )
    assert video.shape == (3, 3, T, SIZE, SIZE) and video.abs().max() <= 1
    separate = module.sample(
        image,
        captions,
        num_steps=2,
        guidance_scale=2.0,
        image_guidance_scale=1.5,
        guidance_rescale=0.7,
        eta=1.0,
    )
    assert separate.shape == video.shape
    with pytest.raises(ValueError, match="unknown sampling settings"):
        module.sample(image, captions, steps=2)
    with pytest.raises(ValueError, match="video_length|num_frames"):
        module.sample(image, captions, num_frames=T + 1, num_steps=1)


# ------------------------------------------------------------------------------- official checkpoint loading
def official_like_cfg():
    """The tiny model with the release's kind of parts: an LDM VAE (4 latent channels) and 8-channel UNet input."""
    cfg = mini_cfg()
    cfg.net.unet.in_channels = 8
    cfg.net.unet.out_channels = 4
    cfg.net.unet.image_cross_attention_scale_learnable = True
    cfg.codec = OmegaConf.create(
        {
            "_target_": "src.models.dynamicrafter.vae.LDMVAECodec",
            "embed_dim": 4,
            "frames_per_chunk": 1,
            "ddconfig": {
                "double_z": True, "z_channels": 4, "resolution": 32, "in_channels": 3, "out_ch": 3, "ch": 32,
                "ch_mult": [1, 2], "num_res_blocks": 1, "attn_resolutions": [], "dropout": 0.0,
            },
        }
    )  # fmt: skip
    return cfg


def test_strict_load_of_a_fake_official_checkpoint(tmp_path):
    cfg = official_like_cfg()
    torch.manual_seed(0)
    source = instantiate(cfg, stage="finetune", init_weights=None)
    state = source.official_state_dict()
    assert {k.split(".")[0] for k in state if "." in k} == {
        "model", "image_proj_model", "first_stage_model", "cond_stage_model", "embedder"
    }  # fmt: skip
    # as the 256 release stores it: Lightning format, legacy fs-embedding name
    state = {k.replace("fps_embedding", "framestride_embed"): v for k, v in state.items()}
    path = tmp_path / "model.ckpt"
    torch.save({"state_dict": state, "global_step": 1}, path)

    torch.manual_seed(1)  # different random init: everything must come from the file
    loaded = instantiate(cfg, stage="finetune", init_weights=None, checkpoint=str(path))
    for name in ("net", "text_encoder", "image_encoder", "codec"):
        ours, theirs = getattr(loaded, name).state_dict(), getattr(source, name).state_dict()
        assert ours.keys() == theirs.keys()
        assert all(torch.equal(ours[k], theirs[k]) for k in ours), name

    missing_key = "model.diffusion_model.out.2.weight"
    broken = {k: v for k, v in state.items() if k != missing_key}
    torch.save({"state_dict": broken}, tmp_path / "broken.ckpt")
    with pytest.raises(WeightLoadError, match="out.2.weight"):
        loaded.load_official(tmp_path / "broken.ckpt")

    vae_key = next(k for k in state if k.startswith("first_stage_model."))
    no_vae = {k: v for k, v in state.items() if k != vae_key}
    torch.save({"state_dict": no_vae}, tmp_path / "no_vae.ckpt")
    with pytest.raises(WeightLoadError, match="missing keys"):
        loaded.load_official(tmp_path / "no_vae.ckpt")

    with pytest.raises(FileNotFoundError, match="model.checkpoint"):
        loaded.load_official(tmp_path / "absent.ckpt")


def test_deferred_parts_read_their_share_of_the_release_when_built_and_resume_an_eager_run(tmp_path):
    """A run from a latent cache defers the codec and encoders (src.trainers.deferred_parts): the module holds
    none of their weights until a part is used, which then loads strictly from the released file."""
    cfg = official_like_cfg()
    names = ("codec", "image_encoder", "text_encoder")
    torch.manual_seed(0)
    source = instantiate(cfg, stage="finetune", init_weights=None)
    path = tmp_path / "model.ckpt"
    torch.save({"state_dict": source.official_state_dict()}, path)
    deferred_cfg = copy.deepcopy(cfg)
    for name in names:
        deferred_cfg[name]["_partial_"] = True
    torch.manual_seed(1)
    deferred = instantiate(deferred_cfg, stage="finetune", init_weights=None, checkpoint=str(path))
    assert all(deferred.is_deferred(name) for name in names)
    assert not any(k.startswith(tuple(f"{n}." for n in names)) for k in deferred.state_dict())
    for name in names:
        ours, theirs = getattr(deferred, name).state_dict(), getattr(source, name).state_dict()
        assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours), name
    assert not any(deferred.is_deferred(name) for name in names)
    assert not any(k.startswith(tuple(f"{n}." for n in names)) for k in deferred.state_dict())
    # a checkpoint of the cached run resumes a run that builds its parts (their keys come back from them)
    checkpoint = {"state_dict": deferred.state_dict()}
    deferred.on_save_checkpoint(checkpoint)
    eager = instantiate(cfg, stage="finetune", init_weights=None, checkpoint=str(path))
    eager.on_load_checkpoint(checkpoint)
    eager.load_state_dict(checkpoint["state_dict"], strict=True)


def test_official_checkpoint_into_a_config_without_its_parts_is_an_error(tmp_path, tiny_cfg):
    cfg = official_like_cfg()
    torch.manual_seed(0)
    state = instantiate(cfg, stage="finetune", init_weights=None).official_state_dict()
    torch.save({"state_dict": state}, tmp_path / "model.ckpt")
    tiny = copy.deepcopy(tiny_cfg)
    tiny.net = cfg.net  # same net, but the tiny pixel codec cannot take first_stage_model.*
    model = instantiate(tiny, stage="finetune", init_weights=None)
    with pytest.raises(ValueError, match="first_stage_model"):
        model.load_official(tmp_path / "model.ckpt")


@pytest.mark.parametrize("release", ["256", "512", "1024"])
def test_release_configs_build_the_official_key_layout(release):
    """conf/model/dynamicrafter_<release>.yaml: UNet, Resampler, VAE and schedule buffers have the released
    checkpoint's keys and shapes (built on the meta device; the ViT-H-14 towers are too big for a unit test)."""
    import json

    from src.models.dynamicrafter.checkpoint import convert_diffusers_vae_state_dict_to_ldm

    manifest = shared_data("dynamicrafter_manifest") / f"dynamicrafter_{release}.json"
    if not manifest.is_file():
        pytest.skip("the DynamiCrafter manifest is not available")
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=[f"model=dynamicrafter_{release}"])
    with torch.device("meta"):
        net, codec = instantiate(cfg.model.net), instantiate(cfg.model.codec)
    ours = {"model.diffusion_model." + k: v.shape for k, v in net.unet.state_dict().items()}
    ours |= {"image_proj_model." + k: v.shape for k, v in net.image_proj.state_dict().items()}
    vae = convert_diffusers_vae_state_dict_to_ldm(codec.vae.state_dict())
    ours |= {"first_stage_model." + k: v.shape for k, v in vae.items()}
    ours |= {k: v.shape for k, v in instantiate(cfg.model.noise).official_root_buffers().items()}
    keys = json.loads(manifest.read_text())["keys"]
    theirs = {
        k.replace("framestride_embed", "fps_embedding"): torch.Size(v)
        for k, v in keys.items()
        if not k.startswith(("cond_stage_model.", "embedder."))
    }
    assert ours == theirs


def test_a_cached_batch_trains_like_the_raw_batch_with_a_sampled_vae_posterior():
    """What a latent cache stores (frozen_features: posterior mean and std, caption embeddings, every frame's image
    tokens) gives the raw step's loss: the latent is drawn per sample from (seed, sample index), not by the VAE."""
    cfg = official_like_cfg()
    cfg.codec.ddconfig.resolution = SIZE
    torch.manual_seed(0)
    module = instantiate(cfg, stage="finetune", init_weights=None, uncond_prob=0.3)
    assert module.codec.sample_posterior
    batch = make_batch(2)
    features = module.frozen_features(batch)
    assert features["latent_std"].shape == features["latent_mean"].shape
    assert features["image_tokens"].shape[:2] == (2, T)
    cached = {k: v for k, v in batch.items() if k not in module.frozen_inputs} | features
    torch.testing.assert_close(module.training_step(cached, 0), module.training_step(batch, 0), rtol=1e-5, atol=1e-6)
    other = dict(batch, sample_index=torch.arange(2) + 2)  # other samples draw other latents
    assert not torch.equal(module.training_step(other, 0), module.training_step(batch, 0))
