"""KeyedDropout: a sample's dropout mask is its own (seed, global index, layer), whatever it is batched with."""

from __future__ import annotations

import pytest
import torch

from src.models.dynamicrafter.blocks import ResBlock
from src.models.keyed_dropout import KeyedDropout, bind_dropout_draws
from src.trainers.sample_draws import SampleDraws

T = 3  # frames folded into the batch, (b t) c h w


def res_block() -> ResBlock:
    torch.manual_seed(0)
    block = ResBlock(32, 16, dropout=0.5, use_temporal_conv=True, temporal_conv_dropout=0.5)
    for p in block.parameters():  # non-zero output convs, so every dropout layer reaches the output
        torch.nn.init.normal_(p, std=0.2)
    return block.train()


def run(block: ResBlock, indices: list[int], x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
    bound = bind_dropout_draws(block, SampleDraws(7, torch.tensor(indices)))
    assert bound == 4  # the ResBlock's own dropout and the temporal conv's three
    return block(x, emb, T)


def test_a_samples_mask_is_the_same_alone_or_batched_with_another():
    block = res_block()
    x, emb = torch.randn(2 * T, 32, 4, 4), torch.randn(2 * T, 16)
    both = run(block, [11, 5], x, emb)
    alone = run(block, [5], x[T:], emb[T:])
    torch.testing.assert_close(alone, both[T:], rtol=1e-6, atol=1e-6)
    swapped = run(block, [5, 11], torch.cat([x[T:], x[:T]]), torch.cat([emb[T:], emb[:T]]))
    torch.testing.assert_close(swapped[:T], both[T:], rtol=1e-6, atol=1e-6)
    # and the mask is live: another index (or eval mode) changes the output
    assert not torch.allclose(run(block, [6], x[T:], emb[T:]), alone)
    assert not torch.allclose(block.eval()(x[T:], emb[T:], T), alone)


def test_masks_differ_per_layer_and_sample_and_drop_at_rate_p():
    draws = SampleDraws(0, torch.tensor([0, 1]))
    keep_a, scale = draws.keep_mask("dropout/a", 100_000, 0.1)
    keep_b, _ = draws.keep_mask("dropout/b", 100_000, 0.1)
    assert keep_a.shape == (2, 100_000) and keep_a.dtype == torch.bool
    assert not torch.equal(keep_a[0], keep_a[1]) and not torch.equal(keep_a, keep_b)
    assert abs((~keep_a).float().mean().item() - 0.1) < 0.005
    assert scale == pytest.approx(1 / 0.9, rel=1e-4)


def test_eval_is_identity_and_unbound_training_is_a_clear_error():
    layer = KeyedDropout(0.1)
    x = torch.randn(4, 8)
    assert layer.eval()(x) is x
    with pytest.raises(RuntimeError, match="bind_dropout_draws"):
        layer.train()(x)
    bind_dropout_draws(layer, SampleDraws(0, torch.tensor([0, 1, 2])))
    with pytest.raises(ValueError, match="not a multiple"):
        layer(x)


def test_activation_checkpointing_recomputes_the_same_mask():
    plain, checkpointed = res_block(), res_block()
    checkpointed.use_checkpoint = True
    x, emb = torch.randn(T, 32, 4, 4), torch.randn(T, 16)
    grads = []
    for block in (plain, checkpointed):
        run(block, [3], x, emb).square().sum().backward()
        grads.append(torch.cat([p.grad.flatten() for p in block.parameters()]))
    torch.testing.assert_close(grads[1], grads[0])


def test_global_masks_draw_from_torchs_rng_and_depend_on_the_batch():
    """model.dropout_masks=global: nn.Dropout's behaviour (faster, batch-dependent), reproducible from the global
    seed, and unlike the keyed masks a sample's output changes with its batch."""
    block = res_block()
    x, emb = torch.randn(2 * T, 32, 4, 4), torch.randn(2 * T, 16)
    bind_dropout_draws(block, SampleDraws(7, torch.tensor([11, 5])), masks="global")
    torch.manual_seed(3)
    first = block(x, emb, T)
    torch.manual_seed(3)
    torch.testing.assert_close(block(x, emb, T), first)
    torch.manual_seed(3)
    alone = block(x[T:], emb[T:], T)
    assert not torch.allclose(alone, first[T:])
    with pytest.raises(ValueError, match="model.dropout_masks"):
        bind_dropout_draws(block, None, masks="philox")
