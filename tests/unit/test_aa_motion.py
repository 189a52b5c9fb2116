"""Motion modules: inflation keeps every 2D weight, zero proj_out is identity, original-ckpt conversion is exact."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from diffusers import MotionAdapter
from diffusers.models.unets.unet_motion_model import AnimateDiffTransformer3D

from src.models.animate_anyone import build_tiny_unet
from src.models.motion import (
    PerFrameGroupNorm,
    build_motion_adapter,
    load_motion_adapter,
    motion_parameter_names,
    to_motion_unet,
)
from src.models.weights import WeightLoadError

CHANNELS = (32, 64)


def _adapter(**kwargs) -> MotionAdapter:
    torch.manual_seed(1)
    options = dict(motion_layers_per_block=1, num_attention_heads=4, max_seq_length=24, norm_num_groups=8)
    options.update(kwargs)
    return build_motion_adapter(CHANNELS, **options)


def _randomize(adapter: MotionAdapter) -> MotionAdapter:
    """Non-trivial values everywhere (LayerNorm weights are ones at init), so equality tests can fail."""
    with torch.no_grad():
        for param in adapter.parameters():
            param.copy_(torch.randn_like(param))
    return adapter


def _animatediff_positional_table(max_len: int, dim: int) -> torch.Tensor:
    """The sinusoidal table of AnimateDiff's motion_module.PositionalEncoding (sin on even, cos on odd channels)."""
    table = torch.zeros(1, max_len, dim)
    for pos in range(max_len):
        for i in range(0, dim, 2):
            angle = pos / (10000.0 ** (i / dim))
            table[0, pos, i] = math.sin(angle)
            table[0, pos, i + 1] = math.cos(angle)
    return table


def _to_original_layout(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Write diffusers names in the layout of AnimateDiff's mm_sd_v15_v2.ckpt (written out here independently)."""
    out = {}
    for key, value in state_dict.items():
        head, rest = key.split(".motion_modules.", 1)
        index, rest = rest.split(".", 1)
        prefix = f"{head}.motion_modules.{index}.temporal_transformer."
        if rest.endswith("pos_embed.pe"):
            # AnimateDiff's PositionalEncoding table, one copy per attention block
            block = rest[: -len("pos_embed.pe")]
            table = _animatediff_positional_table(value.shape[1], value.shape[2])
            out[f"{prefix}{block}attention_blocks.0.pos_encoder.pe"] = table
            out[f"{prefix}{block}attention_blocks.1.pos_encoder.pe"] = table.clone()
            continue
        for new, old in (
            ("attn1.", "attention_blocks.0."),
            ("attn2.", "attention_blocks.1."),
            ("norm1.", "norms.0."),
            ("norm2.", "norms.1."),
            ("norm3.", "ff_norm."),
        ):
            rest = rest.replace(new, old)
        out[prefix + rest] = value
    return out


def test_inflation_copies_every_2d_weight() -> None:
    torch.manual_seed(0)
    unet2d = build_tiny_unet(8, 4, 4)
    motion = to_motion_unet(unet2d, _adapter(), zero_proj_out=False)
    flat, inflated = unet2d.state_dict(), motion.state_dict()
    assert set(flat) <= set(inflated)
    assert all("motion_modules" in k for k in set(inflated) - set(flat))
    for key, value in flat.items():
        assert torch.equal(inflated[key], value), key
    names = motion_parameter_names(motion)
    assert names and all("motion_modules" in n for n in names)
    assert len(names) == sum(1 for n, _ in motion.named_parameters() if n not in flat)


def test_zero_proj_out_motion_unet_equals_2d_unet_per_frame() -> None:
    torch.manual_seed(0)
    unet2d = build_tiny_unet(8, 4, 4)
    motion = to_motion_unet(unet2d, _adapter(), zero_proj_out=True)
    b, t = 2, 16
    video = torch.randn(b, 4, t, 8, 8)
    timesteps = torch.tensor([3, 700])
    context = torch.randn(b, 1, 32)
    with torch.no_grad():
        out = motion(video, timesteps, context.repeat_interleave(t, 0)).sample
        frames = video.transpose(1, 2).flatten(0, 1)
        ref = unet2d(frames, timesteps.repeat_interleave(t), context.repeat_interleave(t, 0)).sample
    torch.testing.assert_close(out, ref.unflatten(0, (b, t)).transpose(1, 2), rtol=0, atol=1e-5)
    # without zeroing, the (random) motion modules do change the output
    nonzero = to_motion_unet(unet2d, _randomize(_adapter()), zero_proj_out=False)
    with torch.no_grad():
        other = nonzero(video, timesteps, context.repeat_interleave(t, 0)).sample
    assert (other - out).abs().max() > 1e-3


def test_norm_group_mismatch_is_rejected() -> None:
    with pytest.raises(ValueError, match="norm_num_groups"):
        to_motion_unet(build_tiny_unet(8, 4, 4), _adapter(norm_num_groups=4))


@pytest.mark.parametrize("wrap", [False, True])
def test_original_checkpoint_round_trip(tmp_path: Path, wrap: bool) -> None:
    adapter = _randomize(_adapter())
    original = _to_original_layout(adapter.state_dict())
    # names as they appear in mm_sd_v15_v2.ckpt
    for key in (
        "down_blocks.0.motion_modules.0.temporal_transformer.transformer_blocks.0.attention_blocks.0.to_q.weight",
        "down_blocks.0.motion_modules.0.temporal_transformer.transformer_blocks.0.norms.0.weight",
        "down_blocks.0.motion_modules.0.temporal_transformer.transformer_blocks.0.ff_norm.bias",
        "down_blocks.1.motion_modules.0.temporal_transformer.transformer_blocks.0.attention_blocks.1.pos_encoder.pe",
        "mid_block.motion_modules.0.temporal_transformer.proj_out.weight",
        "up_blocks.1.motion_modules.1.temporal_transformer.transformer_blocks.0.ff.net.0.proj.weight",
    ):
        assert key in original, key
    path = tmp_path / "mm.ckpt"
    torch.save({"state_dict": original} if wrap else original, path)
    loaded = load_motion_adapter(path, num_attention_heads=4, norm_num_groups=8)
    assert tuple(loaded.config.block_out_channels) == CHANNELS
    assert loaded.config.motion_max_seq_length == 24
    assert loaded.config.use_motion_mid_block
    expected = adapter.state_dict()
    got = loaded.state_dict()
    assert set(got) == set(expected)
    for key in expected:
        if key.endswith("pos_embed.pe"):  # recomputed by a different formula: equal to float precision
            torch.testing.assert_close(got[key], expected[key], rtol=0, atol=1e-5)
        else:
            assert torch.equal(got[key], expected[key]), key


def test_original_checkpoint_pe_matches_diffusers_formula(tmp_path: Path) -> None:
    """The sinusoidal tables of a fresh adapter (diffusers' formula) are what the original layout carries."""
    adapter = _adapter()
    original = _to_original_layout(adapter.state_dict())
    bad = dict(original)
    key = "down_blocks.0.motion_modules.0.temporal_transformer.transformer_blocks.0.attention_blocks.0.pos_encoder.pe"
    bad[key] = bad[key] + 0.5
    bad[key.replace("attention_blocks.0", "attention_blocks.1")] = bad[key]
    torch.save(bad, tmp_path / "bad_pe.ckpt")
    with pytest.raises(WeightLoadError, match="sinusoidal"):
        load_motion_adapter(tmp_path / "bad_pe.ckpt", num_attention_heads=4, norm_num_groups=8)


def test_original_checkpoint_missing_and_unexpected_keys(tmp_path: Path) -> None:
    original = _to_original_layout(_adapter().state_dict())
    missing_key = "up_blocks.0.motion_modules.1.temporal_transformer.transformer_blocks.0.attention_blocks.1.to_v.weight"
    partial = {k: v for k, v in original.items() if k != missing_key}
    torch.save(partial, tmp_path / "partial.ckpt")
    with pytest.raises(
        WeightLoadError, match="up_blocks.0.motion_modules.1.transformer_blocks.0.attn2.to_v.weight"
    ):
        load_motion_adapter(tmp_path / "partial.ckpt", num_attention_heads=4, norm_num_groups=8)
    extra = dict(original)
    extra["down_blocks.0.motion_modules.0.temporal_transformer.extra_gate"] = torch.zeros(1)
    torch.save(extra, tmp_path / "extra.ckpt")
    with pytest.raises(WeightLoadError, match="extra_gate"):
        load_motion_adapter(tmp_path / "extra.ckpt", num_attention_heads=4, norm_num_groups=8)
    foreign = dict(original)
    foreign["conv_in.weight"] = torch.zeros(1)
    torch.save(foreign, tmp_path / "foreign.ckpt")
    with pytest.raises(WeightLoadError, match="conv_in.weight"):
        load_motion_adapter(tmp_path / "foreign.ckpt", num_attention_heads=4, norm_num_groups=8)


def test_diffusers_folder_loads_strictly(tmp_path: Path) -> None:
    adapter = _randomize(_adapter())
    adapter.save_pretrained(tmp_path / "adapter")
    loaded = load_motion_adapter(tmp_path / "adapter")
    for key, value in adapter.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    with pytest.raises(FileNotFoundError, match="model.motion_adapter.path"):
        load_motion_adapter(tmp_path / "nowhere")


def _proj_out_weights(motion) -> list[torch.Tensor]:
    return [m.proj_out.weight for n, m in motion.named_modules() if n.endswith(".motion_modules.0")]


def test_pretrained_motion_modules_keep_proj_out_by_default_and_zero_only_when_asked(tmp_path: Path) -> None:
    """Default "fresh": a freshly built adapter is zeroed, a loaded one runs as trained; "always" zeroes it too."""
    torch.manual_seed(0)
    unet2d = build_tiny_unet(8, 4, 4)
    fresh = to_motion_unet(unet2d, _randomize(_adapter()))
    assert all(not w.any() for w in _proj_out_weights(fresh))
    adapter = _randomize(_adapter())
    torch.save(_to_original_layout(adapter.state_dict()), tmp_path / "mm.ckpt")
    pretrained = load_motion_adapter(tmp_path / "mm.ckpt", num_attention_heads=4, norm_num_groups=8)
    kept = to_motion_unet(unet2d, pretrained)
    stored = adapter.down_blocks[0].motion_modules[0].proj_out.weight
    assert torch.equal(kept.down_blocks[0].motion_modules[0].proj_out.weight, stored)
    assert all(w.abs().sum() > 0 for w in _proj_out_weights(kept))
    zeroed = to_motion_unet(unet2d, load_motion_adapter(tmp_path / "mm.ckpt", 4, 8), zero_proj_out="always")
    assert all(not w.any() for w in _proj_out_weights(zeroed))
    with pytest.raises(ValueError, match="zero_motion_proj_out"):
        to_motion_unet(unet2d, pretrained, zero_proj_out="sometimes")


def test_per_frame_group_norm_normalises_each_frame_on_its_own() -> None:
    """Against the GroupNorm formula applied frame by frame (original AnimateDiff's `(b f) c h w` norm)."""
    torch.manual_seed(0)
    norm = PerFrameGroupNorm(4, 8, eps=1e-6)
    with torch.no_grad():
        norm.weight.normal_()
        norm.bias.normal_()
    x = torch.randn(2, 8, 3, 5, 5) * torch.arange(1, 4).view(1, 1, 3, 1, 1)  # frames with different scales
    expected = torch.empty_like(x)
    for b in range(2):
        for f in range(3):
            groups = x[b, :, f].reshape(4, -1)
            mean, var = groups.mean(1, keepdim=True), groups.var(1, unbiased=False, keepdim=True)
            normed = ((groups - mean) / torch.sqrt(var + 1e-6)).reshape(8, 5, 5)
            expected[b, :, f] = normed * norm.weight.view(8, 1, 1) + norm.bias.view(8, 1, 1)
    torch.testing.assert_close(norm(x), expected, rtol=0, atol=1e-5)
    across = torch.nn.functional.group_norm(x, 4, norm.weight, norm.bias, 1e-6)
    assert (across - expected).abs().max() > 0.1


@pytest.mark.parametrize("norm", ["per_frame", "across_frames"])
def test_motion_norm_choice_is_placed_in_every_motion_module(norm: str) -> None:
    torch.manual_seed(0)
    motion = to_motion_unet(build_tiny_unet(8, 4, 4), _adapter(), norm=norm)
    norms = [m.norm for m in motion.modules() if isinstance(m, AnimateDiffTransformer3D)]
    assert norms and all(isinstance(m, PerFrameGroupNorm) == (norm == "per_frame") for m in norms)
    assert set(motion.state_dict()) == set(to_motion_unet(build_tiny_unet(8, 4, 4), _adapter()).state_dict())
