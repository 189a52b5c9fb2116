"""SampleDraws: the Threefry block against Random123's known answers, per-sample independence from the batch, and
the distributions the training step relies on (normal noise, uniform dropout, integer timesteps/frames)."""

from __future__ import annotations

import math

import pytest
import torch

from src.trainers.sample_draws import SampleDraws, threefry2x32, threefry2x32_int

M = 0xFFFFFFFF


@pytest.mark.parametrize(
    "key,counter,expected",
    [  # Random123's kat_vectors for threefry2x32_20 (also JAX's threefry_2x32 test)
        ((0, 0), (0, 0), (0x6B200159, 0x99BA4EFE)),
        ((M, M), (M, M), (0x1CB996FC, 0xBB002BE7)),
        ((0x13198A2E, 0x03707344), (0x243F6A88, 0x85A308D3), (0xC4923A9C, 0x483DF7A0)),
    ],
)
def test_threefry_matches_the_random123_known_answers(key, counter, expected):
    t = lambda v: torch.tensor(v, dtype=torch.int64)  # noqa: E731
    out = threefry2x32(t(key[0]), t(key[1]), t(counter[0]), t(counter[1]))
    assert (int(out[0]), int(out[1])) == expected
    assert threefry2x32_int(*key, *counter) == expected  # the host-side scalar path (global RNG seed)


def test_vectorised_rounds_equal_the_host_scalar_path_on_large_wrapping_inputs():
    """The tensor rounds run in wrapping int32 arithmetic; on a large tensor (the vectorised kernels, not the
    scalar tail the known answers exercise) with counters and keys across the whole uint32 range, sampled
    positions equal the pure-Python uint32 reference."""
    gen = torch.Generator().manual_seed(0)
    key0, key1 = torch.randint(0, 2**32, (2, 2, 1), generator=gen)
    ctr0 = torch.cat([torch.arange(2**31 - 50_000, 2**31 + 50_000), torch.randint(0, 2**32, (100_000,), generator=gen)])
    ctr1 = torch.randint(0, 2**32, ctr0.shape, generator=gen)
    x0, x1 = threefry2x32(key0, key1, ctr0[None], ctr1[None])
    assert x0.dtype == torch.int64 and x0.shape == (2, 200_000) and int(x0.min()) >= 0 and int(x1.max()) <= M
    for row in range(2):
        for j in torch.randint(0, 200_000, (40,), generator=gen).tolist() + [0, 49_999, 50_000, 199_999]:
            expected = threefry2x32_int(int(key0[row]), int(key1[row]), int(ctr0[j]), int(ctr1[j]))
            assert (int(x0[row, j]), int(x1[row, j])) == expected, (row, j)


def test_a_samples_draws_depend_on_its_index_not_on_its_batch():
    """What makes any world size / batch split draw the same: row i is a function of sample_index[i] alone."""
    together = SampleDraws(7, torch.tensor([3, 10, 2**40 + 5]))
    alone = [SampleDraws(7, torch.tensor([i])) for i in (3, 10, 2**40 + 5)]
    for draw in (
        lambda d: d.normal("noise", (2, 3, 5)),
        lambda d: d.uniform("conditioning_dropout"),
        lambda d: d.integers("timesteps", 1000),
    ):
        assert torch.equal(draw(together), torch.cat([draw(d) for d in alone]))


def test_seeds_indices_and_purposes_give_different_draws():
    base = SampleDraws(0, torch.arange(4)).normal("noise", (64,))
    assert not torch.equal(base[0], base[1])  # samples differ from each other
    assert not torch.equal(base, SampleDraws(1, torch.arange(4)).normal("noise", (64,)))  # so do seeds
    other = SampleDraws(0, torch.arange(4)).normal("noise_offset", (64,))
    assert abs(float(torch.corrcoef(torch.stack([base.flatten(), other.flatten()]))[0, 1])) < 0.2
    # a longer draw of the same purpose starts with the shorter one (a counter per element)
    assert torch.equal(SampleDraws(0, torch.arange(4)).normal("noise", (65,))[:, :64], base)


def test_distributions():
    draws = SampleDraws(123, torch.arange(32))
    z = draws.normal("noise", (2048,)).double()
    assert abs(float(z.mean())) < 0.02 and abs(float(z.std()) - 1) < 0.02
    assert abs(float((z.abs() > 1.96).double().mean()) - 0.05) < 0.003  # the tails, not just the moments
    u = draws.uniform("u", (2048,))
    assert float(u.min()) >= 0 and float(u.max()) < 1 and abs(float(u.double().mean()) - 0.5) < 0.005
    k = draws.integers("t", 7, (2048,))
    counts = torch.bincount(k.flatten(), minlength=7).double()
    expected = k.numel() / 7
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert k.min() == 0 and k.max() == 6 and chi2 < 22.5  # p = 0.001 at 6 degrees of freedom
    assert torch.equal(draws.integers("t", 1, (8,)), torch.zeros(32, 8, dtype=torch.int64))
    assert draws.normal("noise", (3,), dtype=torch.bfloat16).dtype == torch.bfloat16


def test_consecutive_indices_are_not_correlated():
    """Neighbouring sample indices (the ranks of one step) must not get related noise."""
    z = SampleDraws(0, torch.arange(512)).normal("noise", (256,))
    corr = torch.corrcoef(torch.stack([z[:-1].flatten(), z[1:].flatten()]))[0, 1]
    assert abs(float(corr)) < 0.01
    assert math.isfinite(float(z.abs().max()))


def test_the_global_rng_is_reseeded_per_rank_step():
    """nn.Dropout's stream: the same first sample index -> the same global draws, another -> different ones."""
    SampleDraws(0, torch.tensor([4, 5])).reseed_global_rng()
    first = torch.rand(8)
    SampleDraws(0, torch.tensor([4])).reseed_global_rng()
    assert torch.equal(torch.rand(8), first)
    SampleDraws(0, torch.tensor([6, 7])).reseed_global_rng()
    assert not torch.equal(torch.rand(8), first)
    # the loader's host-side first index gives the same seed without reading the index tensor
    words = SampleDraws(0, torch.tensor([6])).bits("global_rng", 2)[0]
    expected = (int(words[0]) << 32 | int(words[1])) & 0x7FFFFFFFFFFFFFFF
    batch = {"sample_index": torch.tensor([6, 7]), "first_sample_index": 6}
    assert SampleDraws.for_batch(0, batch, 2).reseed_global_rng() == expected


def test_bad_input_is_a_clear_error():
    with pytest.raises(ValueError, match="no 'sample_index'.*ExactBatchLoader"):
        SampleDraws.for_batch(0, {"video": torch.zeros(2)}, 2)
    with pytest.raises(ValueError, match="2 entries for 3 samples"):
        SampleDraws.for_batch(0, {"sample_index": torch.arange(2)}, 3)
    with pytest.raises(ValueError, match="seed"):
        SampleDraws(2**32, torch.arange(2))
    with pytest.raises(ValueError, match="int64"):
        SampleDraws(0, torch.zeros(2, dtype=torch.int32))


@pytest.mark.gpu
def test_cuda_draws_equal_cpu_draws():
    index = torch.arange(3) * 1000
    cpu, gpu = SampleDraws(5, index), SampleDraws(5, index.cuda())
    assert torch.equal(gpu.integers("timesteps", 1000).cpu(), cpu.integers("timesteps", 1000))
    assert torch.equal(gpu.uniform("u", (9,)).cpu(), cpu.uniform("u", (9,)))
    torch.testing.assert_close(gpu.normal("noise", (4, 8, 8)).cpu(), cpu.normal("noise", (4, 8, 8)), rtol=1e-5, atol=1e-5)
