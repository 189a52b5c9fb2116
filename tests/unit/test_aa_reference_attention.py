"""Reference attention processors: equivalences with diffusers' SDPA processor and a hand-written reference."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from diffusers.models.attention_processor import Attention, AttnProcessor2_0

from src.models.animate_anyone import build_tiny_unet
from src.models.motion import build_motion_adapter, to_motion_unet
from src.models.reference_attention import (
    ReferenceBank,
    ReferenceReadProcessor,
    ReferenceWriteProcessor,
    attach_reference_attention,
    spatial_self_attention_names,
    unused_reference_parameter_names,
)

DIM, HEADS = 32, 4
NAME = "layer"


@pytest.fixture
def attn() -> Attention:
    torch.manual_seed(0)
    module = Attention(query_dim=DIM, heads=HEADS, dim_head=DIM // HEADS, bias=False, out_bias=True)
    return module.eval()


def _run(attn: Attention, processor, x: torch.Tensor) -> torch.Tensor:
    attn.set_processor(processor)
    with torch.no_grad():
        return attn(x)


def _manual_reference_attention(
    attn: Attention, x: torch.Tensor, ref: torch.Tensor, frames: int
) -> torch.Tensor:
    """Independent math: per frame, softmax(q [k_x; k_ref]^T / sqrt(d)) [v_x; v_ref], then to_out."""
    outs = []
    d = DIM // HEADS
    for i in range(x.shape[0]):
        tokens = torch.cat([x[i], ref[i // frames]], dim=0)  # (N + L, C)
        q = (x[i] @ attn.to_q.weight.T).view(-1, HEADS, d).transpose(0, 1)
        k = (tokens @ attn.to_k.weight.T).view(-1, HEADS, d).transpose(0, 1)
        v = (tokens @ attn.to_v.weight.T).view(-1, HEADS, d).transpose(0, 1)
        weights = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(d), dim=-1)
        out = (weights @ v).transpose(0, 1).reshape(-1, DIM)
        outs.append(out @ attn.to_out[0].weight.T + attn.to_out[0].bias)
    return torch.stack(outs)


def test_empty_bank_equals_diffusers_sdpa(attn: Attention) -> None:
    x = torch.randn(3, 10, DIM)
    expected = _run(attn, AttnProcessor2_0(), x)
    bank = ReferenceBank()
    read = _run(attn, ReferenceReadProcessor(bank, NAME), x)
    torch.testing.assert_close(read, expected, rtol=0, atol=1e-6)
    write = _run(attn, ReferenceWriteProcessor(bank, NAME), x)
    torch.testing.assert_close(write, expected, rtol=0, atol=1e-6)
    assert len(bank) == 1 and bank.entries[NAME] is x  # the write stored its input tokens


def test_sealed_bank_ignores_writes(attn: Attention) -> None:
    bank = ReferenceBank()
    bank.seal()
    _run(attn, ReferenceWriteProcessor(bank, NAME), torch.randn(1, 4, DIM))
    assert len(bank) == 0
    bank.clear()
    _run(attn, ReferenceWriteProcessor(bank, NAME), torch.randn(1, 4, DIM))
    assert len(bank) == 1


def test_reference_tokens_change_output_as_concatenated_attention(attn: Attention) -> None:
    b, t, n, length = 2, 3, 6, 5
    x = torch.randn(b * t, n, DIM)
    ref = torch.randn(b, length, DIM)
    bank = ReferenceBank()
    bank.entries[NAME] = ref
    out = _run(attn, ReferenceReadProcessor(bank, NAME), x)
    plain = _run(attn, AttnProcessor2_0(), x)
    assert (out - plain).abs().max() > 1e-2
    torch.testing.assert_close(out, _manual_reference_attention(attn, x, ref, t), rtol=1e-5, atol=1e-5)


def test_bank_repeats_over_frames_like_separate_frames(attn: Attention) -> None:
    b, t, n, length = 2, 4, 5, 7
    x = torch.randn(b * t, n, DIM)
    ref = torch.randn(b, length, DIM)
    bank = ReferenceBank()
    bank.entries[NAME] = ref
    batched = _run(attn, ReferenceReadProcessor(bank, NAME), x)
    for i in range(b * t):
        single = ReferenceBank()
        single.entries[NAME] = ref[i // t : i // t + 1]
        alone = _run(attn, ReferenceReadProcessor(single, NAME), x[i : i + 1])
        torch.testing.assert_close(batched[i : i + 1], alone, rtol=1e-5, atol=1e-6)


def test_use_reference_false_samples_ignore_the_bank(attn: Attention) -> None:
    b, t, n, length = 3, 2, 6, 4
    x = torch.randn(b * t, n, DIM)
    ref = torch.randn(b, length, DIM)
    bank = ReferenceBank()
    bank.entries[NAME] = ref
    bank.use_reference = torch.tensor([True, False, True])  # plain attribute assignment also decides the mask
    assert bank.needs_mask
    out = _run(attn, ReferenceReadProcessor(bank, NAME), x)
    plain = _run(attn, AttnProcessor2_0(), x)
    with_ref = _manual_reference_attention(attn, x, ref, t)
    torch.testing.assert_close(out[t : 2 * t], plain[t : 2 * t], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out[:t], with_ref[:t], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out[2 * t :], with_ref[2 * t :], rtol=1e-5, atol=1e-5)
    bank.set_use_reference(torch.tensor([True, True, True]))
    assert bank.needs_mask  # deciding from the values would read them back from the device every step
    all_true = _run(attn, ReferenceReadProcessor(bank, NAME), x)
    torch.testing.assert_close(all_true, with_ref, rtol=1e-5, atol=1e-5)  # an all-True mask changes nothing
    bank.set_use_reference(None)
    assert not bank.needs_mask


def test_bad_batch_is_a_clear_error(attn: Attention) -> None:
    bank = ReferenceBank()
    bank.entries[NAME] = torch.randn(2, 3, DIM)
    with pytest.raises(ValueError, match="B\\*T"):
        _run(attn, ReferenceReadProcessor(bank, NAME), torch.randn(3, 4, DIM))


def test_attach_pairs_every_spatial_self_attention_and_skips_motion_modules() -> None:
    torch.manual_seed(0)
    reference = build_tiny_unet(8, 4, 4)
    denoising = to_motion_unet(build_tiny_unet(8, 4, 4), build_motion_adapter((32, 64), 1, norm_num_groups=8))
    bank = ReferenceBank()
    names = attach_reference_attention(reference, denoising, bank)
    assert names == spatial_self_attention_names(reference)
    # 2 down + 1 mid + 4 up transformer blocks in the tiny UNet
    assert len(names) == 7
    for name, module in denoising.named_modules():
        if name.endswith("attn1") or name.endswith("attn2"):
            processor = module.processor
            if "motion_modules" in name or name.endswith("attn2"):
                assert isinstance(processor, AttnProcessor2_0), name
            else:
                assert isinstance(processor, ReferenceReadProcessor) and processor.name == name
    for name in names:
        assert isinstance(reference.get_submodule(name).processor, ReferenceWriteProcessor)


def test_attach_rejects_different_layouts() -> None:
    reference = build_tiny_unet(8, 4, 4, layers_per_block=1)
    denoising = build_tiny_unet(8, 4, 4, layers_per_block=2)
    with pytest.raises(ValueError, match="only in denoising UNet: \\['down_blocks.0.attentions.1"):
        attach_reference_attention(reference, denoising, ReferenceBank())


def test_unet_with_empty_bank_equals_default_processors() -> None:
    torch.manual_seed(0)
    reference, denoising = build_tiny_unet(8, 4, 4), build_tiny_unet(8, 4, 4)
    x, t, context = torch.randn(2, 4, 8, 8), torch.tensor([10, 500]), torch.randn(2, 1, 32)
    with torch.no_grad():
        expected = denoising(x, t, context).sample
        attach_reference_attention(reference, denoising, ReferenceBank())
        got = denoising(x, t, context).sample
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)


def _unet(down: tuple[str, str], up: tuple[str, str], layers: int, transformer_layers: int):
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        down_block_types=down,
        up_block_types=up,
        block_out_channels=(16, 32),
        layers_per_block=layers,
        cross_attention_dim=16,
        attention_head_dim=4,
        norm_num_groups=8,
        transformer_layers_per_block=transformer_layers,
    )


CROSS_DOWN, CROSS_UP, PLAIN_DOWN, PLAIN_UP = (
    "CrossAttnDownBlock2D",
    "CrossAttnUpBlock2D",
    "DownBlock2D",
    "UpBlock2D",
)


@pytest.mark.parametrize(
    "down,up,layers,transformer_layers",
    [
        ((CROSS_DOWN, CROSS_DOWN), (CROSS_UP, CROSS_UP), 1, 1),  # the tiny UNet layout
        (
            (CROSS_DOWN, PLAIN_DOWN),
            (PLAIN_UP, CROSS_UP),
            2,
            2,
        ),  # SD-like, 2 transformer layers in the last one
        (
            (PLAIN_DOWN, CROSS_DOWN),
            (CROSS_UP, PLAIN_UP),
            1,
            1,
        ),  # resnets and an upsampler after the last write
    ],
)
def test_unused_reference_parameters_match_backward(down, up, layers: int, transformer_layers: int) -> None:
    torch.manual_seed(0)
    reference = _unet(down, up, layers, transformer_layers)
    bank = ReferenceBank()
    attach_reference_attention(reference, copy.deepcopy(reference), bank)
    reference(torch.randn(2, 4, 8, 8), torch.zeros(2, dtype=torch.long), torch.randn(2, 1, 16))
    sum(entry.sum() for entry in bank.entries.values()).backward()
    by_backward = {name for name, p in reference.named_parameters() if p.grad is None}
    static = unused_reference_parameter_names(reference)
    assert static == by_backward
    assert "conv_out.weight" in static and "conv_in.weight" not in static
    assert any(".attn1.to_q." in name for name in static)  # the last block's own attention is unused
