"""Clip sampling: margins, strides and bounds hold over many random draws; too-short videos raise."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from src.data.clip_sampling import (
    ClipTooShort,
    sample_clip_indices,
    sample_reference_and_target,
    sample_reference_index,
)


def test_reference_and_target_respect_margin_and_bounds_property() -> None:
    cases = np.random.default_rng(123)
    rng = np.random.default_rng(0)
    for _ in range(400):
        margin = int(cases.integers(0, 40))
        num_frames = int(cases.integers(margin + 1, margin + 60))
        reference, target = sample_reference_and_target(num_frames, margin, rng)
        assert 0 <= reference < num_frames and 0 <= target < num_frames
        assert abs(reference - target) >= margin


def test_reference_and_target_uniform_over_all_valid_pairs() -> None:
    num_frames, margin, draws = 6, 2, 24000
    valid = [(r, t) for r in range(num_frames) for t in range(num_frames) if abs(r - t) >= margin]
    rng = np.random.default_rng(1)
    counts = Counter(sample_reference_and_target(num_frames, margin, rng) for _ in range(draws))
    assert set(counts) == set(valid)
    expected = draws / len(valid)
    assert all(abs(count - expected) < 0.15 * expected for count in counts.values()), counts


def test_reference_and_target_at_the_limit_and_too_short() -> None:
    rng = np.random.default_rng(2)
    pairs = {sample_reference_and_target(31, 30, rng) for _ in range(50)}
    assert pairs == {(0, 30), (30, 0)}
    for num_frames in (0, 10, 30):
        with pytest.raises(ClipTooShort, match="margin"):
            sample_reference_and_target(num_frames, 30, rng)
    assert sample_reference_and_target(1, 0, rng) == (0, 0)


def test_clip_indices_respect_stride_and_bounds_property() -> None:
    cases = np.random.default_rng(7)
    rng = np.random.default_rng(3)
    for _ in range(400):
        n, stride = int(cases.integers(1, 25)), int(cases.integers(1, 6))
        span = (n - 1) * stride + 1
        num_frames = int(cases.integers(span, span + 50))
        indices = sample_clip_indices(num_frames, n, stride, rng)
        assert len(indices) == n
        assert all(0 <= i < num_frames for i in indices)
        assert all(b - a == stride for a, b in zip(indices, indices[1:]))


def test_clip_start_covers_every_valid_position() -> None:
    rng = np.random.default_rng(4)
    starts = {sample_clip_indices(10, 3, 2, rng)[0] for _ in range(600)}
    assert starts == set(range(6))  # span 5 in 10 frames: starts 0..5
    assert sample_clip_indices(9, 3, 4, rng) == [0, 4, 8]  # exact fit


def test_clip_too_short_raises() -> None:
    with pytest.raises(ClipTooShort, match="spans 93 frames"):
        sample_clip_indices(92, 24, 4, np.random.default_rng(0))


def test_reference_index_uniform_over_whole_video() -> None:
    rng = np.random.default_rng(5)
    counts = Counter(sample_reference_index(8, rng) for _ in range(8000))
    assert set(counts) == set(range(8))
    assert all(abs(c - 1000) < 150 for c in counts.values())
    with pytest.raises(ClipTooShort):
        sample_reference_index(0, rng)


def test_same_seed_same_draws() -> None:
    a = [sample_clip_indices(50, 4, 3, np.random.default_rng(9)) for _ in range(3)]
    assert a[0] == a[1] == a[2]
