"""Training randomness as a function of (seed, global sample index, purpose), the same on any rank or world size.

Why: every rank seeds the global RNG alike, so global draws repeat on every rank (N ranks, one noise tensor),
and they restart from the seed when a run resumes. Here each training sample owns its draws: the loader numbers
samples globally (`ExactBatchLoader` puts "sample_index" in every batch) and the training step asks
`SampleDraws` for noise, timesteps, dropout and the VAE's posterior noise. So a sample's draws do not depend on the batch it lands in, its
rank, the world size, the per-device batch size or gradient accumulation, and a resumed run (whose loader
restores the numbering) draws what the uninterrupted one would have.

How: counter-based, not a generator per sample. Every 32-bit random word is Threefry-2x32 with 20 rounds
(Salmon et al., SC 2011, "Parallel random numbers: as easy as 1, 2, 3"; the block cipher behind JAX's PRNG) of
an element counter, under a per-sample key that is itself Threefry of the sample index under (seed, purpose).
All of it is batched integer tensor arithmetic on the batch's device: no Python loop over samples, no generator
objects, a few hundred element-wise in-place kernels per draw. Each purpose ("noise", "timesteps", ...) is an
independent stream, so adding a draw never shifts another. Normals are Box-Muller of 24-bit uniforms (tails cut
at 5.8 sigma, probability 1e-8); integers in [0, high) are Lemire's exact multiply-shift of a 32-bit word.
Dropout inside the networks is keyed too: src.models.keyed_dropout.KeyedDropout draws `keep_mask` per sample
and layer. `reseed_global_rng` remains for anything else that draws from torch's global RNG: one stream per
rank step, keyed on the batch's first sample index (distinct per rank, replayed on resume).
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Mapping, Sequence
from typing import Any

import torch

__all__ = ["SampleDraws", "threefry2x32"]

_MASK = 0xFFFFFFFF
_PARITY = 0x1BD11BDA  # Threefry's key-schedule constant
_ROTATIONS = (13, 15, 26, 6, 17, 29, 16, 24)
_INV_2_24 = 1.0 / (1 << 24)


def _as_int32(words: torch.Tensor) -> torch.Tensor:
    """uint32 values held in int64 -> the same 32 bits as int32 (two's complement)."""
    return torch.where(words >= 1 << 31, words - (1 << 32), words).to(torch.int32)


def threefry2x32(
    key0: torch.Tensor, key1: torch.Tensor, ctr0: torch.Tensor, ctr1: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Threefry-2x32-20 of counter (ctr0, ctr1) under key (key0, key1); int64 tensors holding uint32 values,
    broadcast together, and the result likewise. Checked against the Random123 known-answer vectors in the tests.

    The rounds run in place on int32 tensors (torch has no uint32 arithmetic): two's-complement addition wraps
    modulo 2**32 exactly as uint32 addition does, XOR/OR/left shift act on the same bits, and the right shift is
    made logical by masking the sign bits it copies in. Half the bytes of int64 words and one fewer kernel per
    rotation: dropout masks of 1.3M-5.2M values per sample come 1.5-1.8x faster on CPU, bit-identical."""
    k0, k1 = key0 & _MASK, key1 & _MASK
    ks = [_as_int32(k) for k in (k0, k1, k0 ^ k1 ^ _PARITY)]
    shape = torch.broadcast_shapes(k0.shape, ctr0.shape, ctr1.shape)
    x0 = (_as_int32(ctr0 & _MASK) + ks[0]).expand(shape).contiguous()
    x1 = (_as_int32(ctr1 & _MASK) + ks[1]).expand(shape).contiguous()
    high = torch.empty_like(x1)
    for group in range(5):
        for r in _ROTATIONS[4 * (group % 2) : 4 * (group % 2) + 4]:
            x0.add_(x1)
            torch.bitwise_left_shift(x1, r, out=high)  # rotate x1 left by r within 32 bits
            x1.bitwise_right_shift_(32 - r).bitwise_and_((1 << r) - 1).bitwise_or_(high).bitwise_xor_(x0)
        n = group + 1
        x0.add_(ks[n % 3])
        x1.add_(ks[(n + 1) % 3]).add_(n)
    return x0.to(torch.int64) & _MASK, x1.to(torch.int64) & _MASK


def threefry2x32_int(key0: int, key1: int, ctr0: int, ctr1: int) -> tuple[int, int]:
    """`threefry2x32` of one counter on Python ints: for the values the host needs (a seed for torch's global
    RNG) without reading a device tensor back."""
    k0, k1 = key0 & _MASK, key1 & _MASK
    ks = (k0, k1, k0 ^ k1 ^ _PARITY)
    x0, x1 = (ctr0 + ks[0]) & _MASK, (ctr1 + ks[1]) & _MASK
    for group in range(5):
        for r in _ROTATIONS[4 * (group % 2) : 4 * (group % 2) + 4]:
            x0 = (x0 + x1) & _MASK
            x1 = (((x1 << r) | (x1 >> (32 - r))) & _MASK) ^ x0
        n = group + 1
        x0 = (x0 + ks[n % 3]) & _MASK
        x1 = (x1 + ks[(n + 1) % 3] + n) & _MASK
    return x0, x1


def _purpose_word(purpose: str) -> int:
    return zlib.crc32(purpose.encode("utf-8")) & _MASK


class SampleDraws:
    """The random draws of one batch of training samples, each keyed by (seed, its global index, purpose).

    `sample_index` is `(b,)` int64 on the device the draws should land on. Every method returns a tensor whose
    first dimension is the batch; row i depends only on (seed, sample_index[i], purpose, shape).
    """

    def __init__(self, seed: int, sample_index: torch.Tensor, first_index: int | None = None) -> None:
        if not 0 <= int(seed) <= _MASK:
            raise ValueError(f"seed={seed} must be in [0, 2**32) (the range Lightning's seed_everything accepts).")
        if sample_index.ndim != 1 or sample_index.dtype != torch.int64:
            raise ValueError(
                f"sample_index must be a 1-D int64 tensor (one global index per sample), got "
                f"{sample_index.dtype} of shape {tuple(sample_index.shape)}."
            )
        # `first_index`: sample_index[0] as known on the host (the loader's "first_sample_index"); with it nothing
        # here reads the device tensor back (the loader's indices are consecutive, so it is also their minimum)
        lowest = first_index if first_index is not None else (int(sample_index.min()) if sample_index.numel() else 0)
        if lowest < 0:
            raise ValueError("sample_index holds negative values; global sample indices count up from 0.")
        self.first_index = first_index
        self.seed = int(seed)
        self.sample_index = sample_index
        self.device = sample_index.device

    @classmethod
    def for_batch(cls, seed: int, batch: Mapping[str, Any], batch_size: int) -> SampleDraws:
        """The draws of a training batch of `batch_size` samples from its "sample_index" entry; a clear error
        when it is missing or does not hold one index per sample."""
        index = batch.get("sample_index")
        if index is None:
            raise ValueError(
                "the training batch has no 'sample_index': training randomness is keyed by each sample's global "
                "index, which src.data.sample_stream.ExactBatchLoader adds to every batch. A custom loader must "
                "add it too (an int64 tensor of shape (batch,), unique per sample across ranks and steps)."
            )
        first = batch.get("first_sample_index")
        draws = cls(seed, torch.as_tensor(index, dtype=torch.int64), None if first is None else int(first))
        if draws.batch_size != batch_size:
            raise ValueError(
                f"batch['sample_index'] has {draws.batch_size} entries for {batch_size} samples; the loader must "
                "give one global index per sample."
            )
        return draws

    @property
    def batch_size(self) -> int:
        return self.sample_index.shape[0]

    def _keys(self, purpose: str) -> tuple[torch.Tensor, torch.Tensor]:
        index = self.sample_index
        k0, k1 = threefry2x32(
            torch.tensor(self.seed, device=self.device),
            torch.tensor(_purpose_word(purpose), device=self.device),
            index & _MASK,
            index >> 32,
        )
        return k0[:, None], k1[:, None]

    def bits(self, purpose: str, count: int) -> torch.Tensor:
        """`(b, 2 * ceil(count / 2))` int64 words in [0, 2**32): pairs of Threefry outputs, counter by counter."""
        if count < 1:
            raise ValueError(f"count must be positive, got {count}.")
        k0, k1 = self._keys(purpose)
        counters = torch.arange((count + 1) // 2, device=self.device, dtype=torch.int64)[None]
        x0, x1 = threefry2x32(k0, k1, counters, torch.zeros_like(counters))
        return torch.stack([x0, x1], dim=-1).flatten(1)

    def uniform(self, purpose: str, shape: Sequence[int] = ()) -> torch.Tensor:
        """float32 uniforms in [0, 1), `(b, *shape)`."""
        count = math.prod(shape)
        words = self.bits(purpose, count)[:, :count]
        return ((words >> 8).to(torch.float32) * _INV_2_24).view(self.batch_size, *shape)

    def normal(self, purpose: str, shape: Sequence[int] = (), dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Standard normals `(b, *shape)` (Box-Muller on float32, then cast to `dtype`)."""
        count = math.prod(shape)
        words = self.bits(purpose, count)
        u1 = ((words[:, 0::2] >> 8) + 1).to(torch.float32) * _INV_2_24  # (0, 1]: log stays finite
        angle = (words[:, 1::2] >> 8).to(torch.float32) * (2.0 * math.pi * _INV_2_24)
        radius = torch.sqrt(-2.0 * torch.log(u1))
        pairs = torch.stack([radius * torch.cos(angle), radius * torch.sin(angle)], dim=-1).flatten(1)
        return pairs[:, :count].reshape(self.batch_size, *shape).to(dtype)

    def integers(self, purpose: str, high: int, shape: Sequence[int] = ()) -> torch.Tensor:
        """int64 uniform in [0, high), `(b, *shape)`: (word * high) >> 32, exact for high <= 2**31."""
        if not 1 <= high <= 2**31:
            raise ValueError(f"high must be in [1, 2**31], got {high}.")
        count = math.prod(shape)
        words = self.bits(purpose, count)[:, :count]
        return ((words * high) >> 32).view(self.batch_size, *shape)

    def keep_mask(self, purpose: str, count: int, p: float) -> tuple[torch.Tensor, float]:
        """Dropout keep mask `(b, count)` bool, each element dropped with probability p, and the unbiased scale
        1 / P(keep). Each 32-bit word gives two 16-bit uniforms (half the Threefry work of `uniform`), so p is
        rounded to a multiple of 2**-16 (0.1 -> 0.100006) and the scale uses that exact keep probability."""
        threshold = round(p * 65536)
        words = self.bits(purpose, (count + 1) // 2)
        halves = torch.stack([words & 0xFFFF, words >> 16], dim=-1).flatten(1)[:, :count]
        return halves >= threshold, 65536.0 / (65536 - threshold)

    def reseed_global_rng(self) -> int:
        """Seed torch's global RNG (CPU and CUDA) from (seed, this batch's first sample index) and return the seed.

        A safety net for library layers that still draw from the global RNG (the project's own dropout is
        KeyedDropout, keyed per sample; no network in src/models trains with another): one stream per rank step,
        different on every rank, and replayed by a resumed run (the same batch has the same indices); unlike
        the per-sample draws it does depend on how samples are grouped into batches."""
        first = self.first_index if self.first_index is not None else int(self.sample_index[0])
        key = threefry2x32_int(self.seed, _purpose_word("global_rng"), first & _MASK, first >> 32)
        words = threefry2x32_int(key[0], key[1], 0, 0)  # = bits("global_rng", 2)[0] of the first sample
        seed = (words[0] << 32 | words[1]) & 0x7FFFFFFFFFFFFFFF
        torch.manual_seed(seed)
        return seed
