"""DynamiCrafter UNet / Resampler: official key layout, float64 numerical reference, checkpoint formats, VAE keys."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml

from src.models.dynamicrafter import (
    DynamiCrafterUNet,
    Resampler,
    convert_diffusers_vae_state_dict_to_ldm,
    convert_ldm_vae_state_dict,
    diffusers_vae_config_from_official,
    load_official_checkpoint,
    load_official_weights,
    load_state_dict_strict,
    resampler_from_official_config,
    split_official_state_dict,
    timestep_embedding,
    unet_from_official_config,
)
from src.models.dynamicrafter.attention import DualCrossAttention
from src.models.dynamicrafter.blocks import FloatGroupNorm, ResBlock
from src.models.dynamicrafter.checkpoint import rename_legacy_keys
from src.models.keyed_dropout import bind_dropout_draws
from src.trainers.sample_draws import SampleDraws
from tests.conftest import shared_data

MANIFEST = shared_data("dynamicrafter_manifest")
needs_manifest = pytest.mark.skipif(not MANIFEST.is_dir(), reason=f"manifest folder not found at {MANIFEST}")

UNET = "model.diffusion_model."
IMAGE_PROJ = "image_proj_model."


def manifest(release: int) -> dict:
    return json.loads((MANIFEST / f"dynamicrafter_{release}.json").read_text())


@pytest.fixture(scope="module")
def tiny():
    """The tiny official config and its float64 reference (weights, inputs, outputs)."""
    cfg = yaml.safe_load((MANIFEST / "tiny_unet_config.yaml").read_text())["model"]["params"]
    ref = torch.load(MANIFEST / "tiny_unet_reference.pt", weights_only=True)
    return cfg, ref


def tiny_unet(cfg: dict, ref: dict, **overrides) -> DynamiCrafterUNet:
    unet = unet_from_official_config(cfg["unet_config"]["params"], **overrides).double()
    load_state_dict_strict(unet, ref["state_dict"], "tiny_unet_reference.pt")
    return unet.eval()


def max_rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    return ((out - ref).abs().max() / ref.abs().max()).item()


# ------------------------------------------------------------------------------------------ official key layout
@needs_manifest
@pytest.mark.parametrize("release", [256, 512, 1024])
def test_keys_and_shapes_equal_official_checkpoint(release: int) -> None:
    m = manifest(release)
    with torch.device("meta"):
        unet = unet_from_official_config(m["unet_config"])
        resampler = resampler_from_official_config(m["model_params_from_config"]["image_proj_stage_config"])
    # What the released file stores (256: framestride_embed), after our loader's rename.
    stored = rename_legacy_keys({k: torch.empty(0) for k in m["checkpoint_keys"]})
    for prefix, module in ((UNET, unet), (IMAGE_PROJ, resampler)):
        ours = {k: list(v.shape) for k, v in module.state_dict().items()}
        expected = {k[len(prefix) :]: v for k, v in m["keys"].items() if k.startswith(prefix)}
        assert ours == expected
        assert list(ours) == list(expected)  # same order as the official state_dict()
        assert set(ours) == {k[len(prefix) :] for k in stored if k.startswith(prefix)}
    alphas = [k for k in unet.state_dict() if k.endswith("attn2.alpha")]
    assert len(alphas) == (16 if release == 256 else 0)
    if release == 256:
        assert any("framestride_embed" in k for k in m["checkpoint_keys"])


@needs_manifest
def test_ldm_vae_keys_equal_official_first_stage_model() -> None:
    from diffusers import AutoencoderKL

    m = manifest(512)
    with torch.device("meta"):
        vae = AutoencoderKL(
            **diffusers_vae_config_from_official(m["model_params_from_config"]["first_stage_config"])
        )
    ldm = convert_diffusers_vae_state_dict_to_ldm(vae.state_dict())
    expected = {
        k[len("first_stage_model.") :]: v for k, v in m["keys"].items() if k.startswith("first_stage_model.")
    }
    assert {k: list(v.shape) for k, v in ldm.items()} == expected


def test_vae_state_dict_round_trip_loads_strictly_into_diffusers() -> None:
    from diffusers import AutoencoderKL

    official = {
        "embed_dim": 4,
        "ddconfig": {
            "double_z": True,
            "z_channels": 4,
            "resolution": 32,
            "in_channels": 3,
            "out_ch": 3,
            "ch": 32,
            "ch_mult": [1, 2],
            "num_res_blocks": 1,
            "attn_resolutions": [],
            "dropout": 0.0,
        },
    }
    torch.manual_seed(0)
    source = AutoencoderKL(**diffusers_vae_config_from_official(official))
    ldm = convert_diffusers_vae_state_dict_to_ldm(source.state_dict())
    assert ldm["decoder.mid.attn_1.q.weight"].shape == (64, 64, 1, 1)
    assert (
        "decoder.up.1.upsample.conv.weight" in ldm and "decoder.up.0.block.1.nin_shortcut.weight" not in ldm
    )
    ldm = {f"first_stage_model.{k}": v for k, v in ldm.items()}
    target = AutoencoderKL(**diffusers_vae_config_from_official(official))
    target.load_state_dict(convert_ldm_vae_state_dict(ldm), strict=True)
    for key, value in source.state_dict().items():
        assert torch.equal(target.state_dict()[key], value), key
    image = torch.randn(1, 3, 16, 16)
    assert torch.equal(source.encode(image).latent_dist.mean, target.encode(image).latent_dist.mean)
    with pytest.raises(ValueError, match="encoder.down.0.attn.0.q.weight"):
        convert_ldm_vae_state_dict(
            {**ldm, "first_stage_model.encoder.down.0.attn.0.q.weight": torch.zeros(1)}
        )


# ------------------------------------------------------------------------------------------ numerical reference
@needs_manifest
def test_tiny_unet_matches_official_float64_reference(tiny) -> None:
    cfg, ref = tiny
    unet = tiny_unet(cfg, ref)
    inputs = ref["inputs"]
    with torch.no_grad():
        out = unet(inputs["x"], inputs["timesteps"], context=inputs["context"], fs=inputs["fs"])
        out_default_fs = unet(inputs["x"], inputs["timesteps"], context=inputs["context"])
    # A float64 model embeds timesteps/fs in float64, so the exact target is output_emb64.
    assert max_rel_err(out, ref["output_emb64"]) <= 1e-6
    assert max_rel_err(out, ref["output_emb64"]) <= 1e-12  # in fact agrees to rounding
    assert max_rel_err(out, ref["output"]) <= 1e-6  # official float32 sinusoids differ by ~1e-7
    assert max_rel_err(out_default_fs, ref["output_fs_none"]) <= 1e-6
    assert torch.equal(out_default_fs[0], out[0])  # fs[0] == default_fs == 3


@needs_manifest
@pytest.mark.parametrize(("dtype", "tolerance"), [(torch.float32, 1e-5), (torch.bfloat16, 5e-2)])
def test_low_precision_forward_stays_close_to_reference(tiny, dtype: torch.dtype, tolerance: float) -> None:
    cfg, ref = tiny
    unet = tiny_unet(cfg, ref).to(dtype)
    inputs = ref["inputs"]
    with torch.no_grad():
        out = unet(
            inputs["x"].to(dtype), inputs["timesteps"], context=inputs["context"].to(dtype), fs=inputs["fs"]
        )
    assert out.dtype == dtype
    assert max_rel_err(out.double(), ref["output"]) <= tolerance


@needs_manifest
def test_float32_sinusoids_equal_official_bit_for_bit(tiny) -> None:
    _, ref = tiny
    inputs = ref["inputs"]
    t_emb = timestep_embedding(inputs["timesteps"], 32).double()
    fs_emb = timestep_embedding(inputs["fs"], 32).double()
    assert torch.equal(t_emb, ref["t_emb_sinusoid_official"])
    assert torch.equal(fs_emb, ref["fs_emb_sinusoid_official"])


@needs_manifest
def test_scalar_timesteps_and_fs_broadcast(tiny) -> None:
    cfg, ref = tiny
    unet = tiny_unet(cfg, ref)
    x, context = ref["inputs"]["x"][..., :4, :4], ref["inputs"]["context"]
    with torch.no_grad():
        scalar = unet(x, 17, context=context, fs=3)
        batched = unet(x, torch.tensor([17, 17]), context=context, fs=torch.tensor([3, 3]))
    assert torch.equal(scalar, batched)
    with pytest.raises(ValueError, match="timesteps must be a scalar or have shape"):
        unet(x, torch.tensor([1, 2, 3]), context=context)


# ------------------------------------------------------------------------------------------ checkpoint files
@needs_manifest
def test_strict_load_with_a_missing_key_names_it(tiny) -> None:
    cfg, ref = tiny
    unet = unet_from_official_config(cfg["unet_config"]["params"]).double()
    state = dict(ref["state_dict"])
    del state["middle_block.1.transformer_blocks.0.attn2.to_k_ip.weight"]
    with pytest.raises(
        RuntimeError, match=r"middle_block\.1\.transformer_blocks\.0\.attn2\.to_k_ip\.weight"
    ) as err:
        load_state_dict_strict(unet, state, "tiny_unet_reference.pt")
    assert "tiny_unet_reference.pt" in str(err.value) and "missing keys" in str(err.value)
    # 256-style weights (learnable alpha) into a fixed-gate model: unexpected alpha keys are listed with a count.
    fixed = unet_from_official_config(
        cfg["unet_config"]["params"], image_cross_attention_scale_learnable=False
    )
    with pytest.raises(RuntimeError, match=r"unexpected keys: .*attn2\.alpha.*\(\d+ in total\)"):
        load_state_dict_strict(fixed, ref["state_dict"], "x.ckpt")


@needs_manifest
@pytest.mark.parametrize("layout", ["lightning", "deepspeed", "legacy_256"])
def test_official_file_formats_load_strictly(tiny, tmp_path: Path, layout: str) -> None:
    cfg, ref = tiny
    resampler = resampler_from_official_config(cfg["image_proj_stage_config"]).double()
    flat = {UNET + k: v for k, v in ref["state_dict"].items()}
    flat |= {IMAGE_PROJ + k: v for k, v in resampler.state_dict().items()}
    flat |= {"betas": torch.zeros(1000), "first_stage_model.quant_conv.weight": torch.zeros(8, 8, 1, 1)}
    flat |= {
        "cond_stage_model.model.ln_final.weight": torch.ones(3),
        "embedder.model.visual.proj": torch.ones(2),
    }
    if layout == "legacy_256":
        flat = {k.replace("fps_embedding", "framestride_embed"): v for k, v in flat.items()}
    payload = (
        {"module": {"_forward_module." + k: v for k, v in flat.items()}}
        if layout == "deepspeed"
        else {"state_dict": flat, "epoch": 3, "global_step": 10}
    )
    path = tmp_path / "model.ckpt"
    torch.save(payload, path)

    unet = unet_from_official_config(cfg["unet_config"]["params"]).double()
    target_resampler = resampler_from_official_config(cfg["image_proj_stage_config"]).double()
    parts = load_official_weights(path, unet=unet, image_proj=target_resampler)
    assert set(parts) == {UNET, IMAGE_PROJ, "first_stage_model.", "cond_stage_model.", "embedder.", ""}
    assert list(parts[""]) == ["betas"] and list(parts["first_stage_model."]) == ["quant_conv.weight"]
    assert torch.equal(
        unet.state_dict()["fps_embedding.2.weight"], ref["state_dict"]["fps_embedding.2.weight"]
    )
    assert torch.equal(target_resampler.latents, resampler.latents)


def test_missing_checkpoint_names_path_and_release(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "model.ckpt"
    with pytest.raises(FileNotFoundError) as err:
        load_official_checkpoint(missing)
    message = str(err.value)
    assert str(missing) in message
    for repo in ("Doubiiu/DynamiCrafter", "Doubiiu/DynamiCrafter_512", "Doubiiu/DynamiCrafter_1024"):
        assert repo in message


def test_pickled_objects_need_explicit_trust(tmp_path: Path) -> None:
    import argparse

    path = tmp_path / "model.ckpt"
    torch.save({"state_dict": {"betas": torch.zeros(3)}, "hparams": argparse.Namespace(lr=1e-5)}, path)
    with pytest.raises(ValueError, match="allow_pickle=True"):
        load_official_checkpoint(path)
    assert list(load_official_checkpoint(path, allow_pickle=True)) == ["betas"]


def test_split_rejects_keys_of_unknown_submodels() -> None:
    with pytest.raises(ValueError, match=r"model_ema\.foo"):
        split_official_state_dict({"model_ema.foo": torch.zeros(1)})


# ------------------------------------------------------------------------------------------ attention behaviour
def reference_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int) -> torch.Tensor:
    """Independent multi-head softmax attention (explicit einsum, float64)."""
    b, n, inner = q.shape
    d = inner // heads
    q, k, v = (t.reshape(t.shape[0], t.shape[1], heads, d).transpose(1, 2) for t in (q, k, v))
    weights = torch.softmax(torch.einsum("bhid,bhjd->bhij", q, k) / math.sqrt(d), dim=-1)
    return torch.einsum("bhij,bhjd->bhid", weights, v).transpose(1, 2).reshape(b, n, inner)


def test_dual_attention_equals_text_plus_gated_image_attention() -> None:
    torch.manual_seed(0)
    attn = DualCrossAttention(
        16, 12, heads=2, dim_head=4, image_cross_attention=True, text_context_len=5
    ).double()
    attn.eval()
    x, context = torch.randn(3, 7, 16, dtype=torch.float64), torch.randn(3, 9, 12, dtype=torch.float64)
    text, image = context[:, :5], context[:, 5:]
    q = attn.to_q(x)
    expected = reference_attention(q, attn.to_k(text), attn.to_v(text), 2)
    expected = expected + reference_attention(q, attn.to_k_ip(image), attn.to_v_ip(image), 2)
    assert torch.allclose(attn(x, context), attn.to_out(expected), atol=1e-12)


def test_dual_attention_with_zero_image_weights_equals_text_only() -> None:
    torch.manual_seed(0)
    dual = DualCrossAttention(16, 12, heads=2, dim_head=8, image_cross_attention=True, text_context_len=5)
    text_only = DualCrossAttention(
        16, 12, heads=2, dim_head=8, image_cross_attention=False, text_context_len=5
    )
    text_only.load_state_dict({k: v for k, v in dual.state_dict().items() if "_ip" not in k})
    torch.nn.init.zeros_(dual.to_v_ip.weight)
    x, context = torch.randn(2, 6, 16), torch.randn(2, 5 + 8, 12)
    assert torch.allclose(dual(x, context), text_only(x, context[:, :5]), atol=1e-6)
    assert torch.allclose(
        dual(x, context), text_only(x, context), atol=1e-6
    )  # text-only cuts the image tokens


def test_learnable_gate_starts_at_one_and_alpha_gets_gradients() -> None:
    torch.manual_seed(0)
    attn = DualCrossAttention(
        8,
        8,
        heads=2,
        dim_head=4,
        image_cross_attention=True,
        text_context_len=3,
        image_cross_attention_scale_learnable=True,
    )
    assert attn.alpha.detach().item() == 0.0 and float(attn.image_gate().detach()) == 1.0
    fixed = DualCrossAttention(8, 8, heads=2, dim_head=4, image_cross_attention=True, text_context_len=3)
    assert "alpha" not in dict(fixed.named_parameters())
    fixed.load_state_dict({k: v for k, v in attn.state_dict().items() if k != "alpha"})
    x, context = torch.randn(2, 4, 8), torch.randn(2, 7, 8)
    assert torch.allclose(attn(x, context), fixed(x, context))  # lambda = tanh(0) + 1 = 1
    attn(x, context).square().sum().backward()
    assert attn.alpha.grad is not None and attn.alpha.grad.abs().item() > 0


def test_context_layout_rule_uses_constructor_token_counts() -> None:
    unet = DynamiCrafterUNet(
        in_channels=8,
        model_channels=32,
        out_channels=4,
        num_res_blocks=1,
        attention_resolutions=[1],
        channel_mult=[1],
        num_head_channels=8,
        context_dim=4,
        use_linear=True,
        temporal_conv=True,
        use_relative_position=False,
        image_cross_attention=True,
        text_context_len=5,
        image_tokens_per_frame=2,
    )
    t = 3
    per_frame = torch.arange(2 * (5 + 2 * t) * 4, dtype=torch.float32).reshape(2, 5 + 2 * t, 4)
    out = unet.per_frame_context(per_frame, t)
    assert out.shape == (2 * t, 5 + 2, 4)
    for b in range(2):
        for f in range(t):
            assert torch.equal(out[b * t + f, :5], per_frame[b, :5])
            assert torch.equal(out[b * t + f, 5:], per_frame[b, 5 + 2 * f : 5 + 2 * (f + 1)])
    shared = torch.randn(2, 5 + 2, 4)  # not text + 2 * t tokens: the whole context is repeated per frame
    assert torch.equal(unet.per_frame_context(shared, t), shared.repeat_interleave(t, dim=0))


# ------------------------------------------------------------------------------------------ numerics / options
def test_resblock_norm_computes_in_float32_and_keeps_float64() -> None:
    torch.manual_seed(0)
    norm = FloatGroupNorm(4, 8).to(torch.bfloat16)
    x = (torch.randn(2, 8, 3, 3) * 50 + 100).to(torch.bfloat16)
    expected = F.group_norm(x.float(), 4, norm.weight.float(), norm.bias.float(), 1e-5).to(torch.bfloat16)
    assert torch.equal(norm(x), expected)
    norm64 = FloatGroupNorm(4, 8).double()
    x64 = torch.randn(2, 8, 3, 3, dtype=torch.float64)
    assert norm64(x64).dtype == torch.float64
    assert torch.equal(norm64(x64), F.group_norm(x64, 4, norm64.weight, norm64.bias, 1e-5))


def count_calls(module: torch.nn.Module) -> list[int]:
    """Count forward calls of ``module`` (recomputation under checkpointing calls it again in backward)."""
    calls = [0]

    def hook(*_: object) -> None:
        calls[0] += 1

    module.register_forward_hook(hook)
    return calls


@needs_manifest
def test_activation_checkpointing_gives_identical_outputs_and_gradients(tiny) -> None:
    cfg, ref = tiny
    inputs = ref["inputs"]
    x, context = inputs["x"][:1, :, :, :4, :4], inputs["context"][:1]
    results = []
    for use_checkpoint in (False, True):
        unet = tiny_unet(cfg, ref, use_checkpoint=use_checkpoint).train()
        res_calls = count_calls(unet.input_blocks[1][0].in_layers)
        attn_calls = count_calls(unet.input_blocks[1][1].transformer_blocks[0].attn1)
        # same keyed dropout masks in both runs; the checkpointed recompute redraws them from the same keys
        bind_dropout_draws(unet, SampleDraws(0, torch.tensor([0])))
        out = unet(x, inputs["timesteps"][:1], context=context, fs=inputs["fs"][:1])
        out.square().mean().backward()
        grads = {k: p.grad.clone() for k, p in unet.named_parameters()}
        results.append((out.detach(), grads, (res_calls[0], attn_calls[0])))
    (out_plain, grads_plain, calls_plain), (out_ckpt, grads_ckpt, calls_ckpt) = results
    assert calls_plain == (1, 1) and calls_ckpt == (2, 2)  # checkpointed blocks are recomputed in backward
    assert torch.equal(out_plain, out_ckpt)
    for key, grad in grads_plain.items():
        assert torch.allclose(grads_ckpt[key], grad, rtol=1e-12, atol=1e-15), key
    with torch.no_grad():  # eval mode: no checkpointing even with use_checkpoint
        unet.eval()(x, inputs["timesteps"][:1], context=context)
    assert res_calls[0] == 3


@needs_manifest
def test_resampler_output_shape_and_values(tiny) -> None:
    cfg, _ = tiny
    params = cfg["image_proj_stage_config"]["params"]
    torch.manual_seed(0)
    resampler = resampler_from_official_config(cfg["image_proj_stage_config"]).double()
    tokens = torch.randn(2, 10, params["embedding_dim"], dtype=torch.float64)
    out = resampler(tokens)
    assert out.shape == (2, params["num_queries"] * params["video_length"], params["output_dim"])

    # Independent float64 reference of the Perceiver layers.
    latents = resampler.latents.expand(2, -1, -1)
    x = resampler.proj_in(tokens)
    for attn, ff in resampler.layers:
        xn, ln = attn.norm1(x), attn.norm2(latents)
        k, v = attn.to_kv(torch.cat([xn, ln], dim=1)).chunk(2, dim=-1)
        latents = attn.to_out(reference_attention(attn.to_q(ln), k, v, params["heads"])) + latents
        latents = ff(latents) + latents
    expected = resampler.norm_out(resampler.proj_out(latents))
    assert torch.allclose(out, expected, atol=1e-12)

    bf16 = resampler.to(torch.bfloat16)(tokens.to(torch.bfloat16))
    assert bf16.dtype == torch.bfloat16 and torch.allclose(bf16.double(), out, atol=0.1)


def test_unsupported_and_unknown_config_flags_are_rejected() -> None:
    base = dict(
        in_channels=8,
        model_channels=32,
        out_channels=4,
        num_res_blocks=1,
        attention_resolutions=[1],
        channel_mult=[1],
        num_head_channels=8,
        context_dim=16,
        use_relative_position=False,
    )
    with pytest.raises(
        ValueError,
        match=r"use_relative_position=True is not supported; supported: use_relative_position=False",
    ):
        unet_from_official_config({**base, "use_relative_position": True})
    omitted = {k: v for k, v in base.items() if k != "use_relative_position"}
    with pytest.raises(
        ValueError, match="use_relative_position=True"
    ):  # omitted means the official default True
        unet_from_official_config(omitted)
    assert isinstance(DynamiCrafterUNet(**omitted), DynamiCrafterUNet)
    with pytest.raises(ValueError, match="temporal_selfatt_only=False"):
        unet_from_official_config({**base, "temporal_selfatt_only": False})
    with pytest.raises(
        ValueError, match=r"unknown unet_config params \['use_image_attention'\]; supported: .*fs_condition"
    ):
        unet_from_official_config({**base, "use_image_attention": True})
    with pytest.raises(ValueError, match="unknown image_proj_stage_config params"):
        resampler_from_official_config({"dim": 8, "num_latents": 4})
    # The {target, params} form of a YAML section is accepted too.
    unet = unet_from_official_config(
        {"target": "lvdm.modules.networks.openaimodel3d.UNetModel", "params": base}
    )
    assert isinstance(unet, DynamiCrafterUNet) and isinstance(unet.input_blocks[1][0], ResBlock)
    assert isinstance(
        resampler_from_official_config({"dim": 32, "depth": 1, "heads": 2, "dim_head": 8}), Resampler
    )
