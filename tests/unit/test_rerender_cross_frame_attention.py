"""Cross-frame attention processors on a tiny SD UNet: attending to a stored copy of the current frame is plain
self-attention; another frame's features change the output; only decoder attn1 layers are replaced; loose_cfattn
drops the widest decoder block; features are stored in half precision."""

from __future__ import annotations

import pytest
import torch
from diffusers.models.attention_processor import AttnProcessor2_0

from src.rerender.cross_frame_attention import (
    CrossFrameAttnProcessor,
    CrossFrameStore,
    install_cross_frame_attention,
)
from tests.tiny_sd import tiny_components


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    return tiny_components(tmp_path_factory.mktemp("tiny_sd"))


def unet_out(unet, x, text):
    return unet(x, torch.tensor([500, 500]), encoder_hidden_states=text).sample


@pytest.mark.parametrize(("dtype", "atol"), [(torch.float32, 1e-5), (torch.float16, 2e-3)])
def test_stored_frame_equal_to_current_frame_is_plain_self_attention(parts, dtype, atol):
    unet = parts.unet
    unet.set_attn_processor(AttnProcessor2_0())
    g = torch.Generator().manual_seed(0)
    x, other, text = (
        torch.randn(2, 4, 8, 8, generator=g),
        torch.randn(2, 4, 8, 8, generator=g),
        torch.randn(2, 16, 32, generator=g),
    )
    with torch.no_grad():
        plain = unet_out(unet, x, text)
        store = CrossFrameStore(dtype)
        layers = install_cross_frame_attention(unet, store)
        store.set_mode("record")
        recorded = unet_out(unet, x, text)
        store.set_mode("attend")
        attended = unet_out(unet, x, text)
        store.set_mode("record")
        unet_out(unet, other, text)  # another frame's features as anchor and previous
        store.set_mode("attend")
        crossed = unet_out(unet, x, text)
    assert len(layers) == 4 and all(".attn1." in n and n.startswith("up_blocks.") for n in layers)
    torch.testing.assert_close(recorded, plain, rtol=0, atol=1e-6)
    torch.testing.assert_close(attended, plain, rtol=0, atol=atol)
    assert (crossed - plain).abs().max() > 0.02  # the stored frame does steer the output
    assert {t.dtype for t in store.anchor.values()} == {dtype} and store.nbytes() > 0


def test_only_decoder_self_attention_is_replaced_and_loose_drops_the_widest_block(parts):
    unet = parts.unet
    store = CrossFrameStore()
    install_cross_frame_attention(unet, store, loose=True)
    replaced = {n for n, p in unet.attn_processors.items() if isinstance(p, CrossFrameAttnProcessor)}
    assert replaced == {f"up_blocks.2.attentions.{i}.transformer_blocks.0.attn1.processor" for i in range(2)}
    assert not any(isinstance(p, CrossFrameAttnProcessor) for p in parts.controlnet.attn_processors.values())
    install_cross_frame_attention(unet, store, loose=False)
    replaced = {n for n, p in unet.attn_processors.items() if isinstance(p, CrossFrameAttnProcessor)}
    assert {n.split(".")[1] for n in replaced} == {"1", "2"} and all(".attn1." in n for n in replaced)
    store.set_mode("attend")
    with pytest.raises(RuntimeError, match="nothing recorded for step"):
        unet_out(unet, torch.randn(2, 4, 8, 8), torch.randn(2, 16, 32))
