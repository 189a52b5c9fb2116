"""Frame-index sampling for the two Animate Anyone training stages.

All functions take a `numpy.random.Generator` (e.g. `np.random.default_rng(seed)`), so a
worker's whole sample stream is reproducible from one seed. Indices are plain Python ints.
"""

from __future__ import annotations

import numpy as np

__all__ = ["ClipTooShort", "sample_clip_indices", "sample_reference_and_target", "sample_reference_index"]


class ClipTooShort(ValueError):
    """The video has too few frames for the requested sampling; the pipeline skips such videos."""

    reason = "too_short"  # the category a skipped sample is counted under


def sample_reference_and_target(num_frames: int, margin: int, rng: np.random.Generator) -> tuple[int, int]:
    """Stage-1 pair: uniform over all ordered (reference, target) pairs with |reference - target| >= margin.

    Exact, without rejection: the distance d is drawn with weight (#pairs at distance d), then
    the pair's position and order. Raises ClipTooShort when num_frames <= margin (no such pair).
    """
    if margin < 0:
        raise ValueError(f"margin must be >= 0, got {margin}")
    if num_frames <= margin or num_frames < 1:
        raise ClipTooShort(
            f"a video of {num_frames} frames has no reference/target pair at least {margin} frames apart; "
            f"it needs more than {margin} frames (lower data.margin or drop short videos)"
        )
    distances = np.arange(margin, num_frames)
    weights = (num_frames - distances) * np.where(distances > 0, 2, 1)
    distance = int(rng.choice(distances, p=weights / weights.sum()))
    low = int(rng.integers(0, num_frames - distance))
    if distance > 0 and rng.random() < 0.5:
        return low + distance, low
    return low, low + distance


def sample_clip_indices(num_frames: int, n: int, stride: int, rng: np.random.Generator) -> list[int]:
    """Stage-2 clip: `n` frames `stride` apart from a uniformly random start, all inside the video.

    Raises ClipTooShort when the clip span (n - 1) * stride + 1 exceeds num_frames.
    """
    if n < 1 or stride < 1:
        raise ValueError(f"n and stride must be >= 1, got n={n}, stride={stride}")
    span = (n - 1) * stride + 1
    if span > num_frames:
        raise ClipTooShort(
            f"a clip of {n} frames at stride {stride} spans {span} frames but the video has {num_frames}; "
            f"lower data.num_frames or data.stride, or drop short videos"
        )
    start = int(rng.integers(0, num_frames - span + 1))
    return [start + i * stride for i in range(n)]


def sample_reference_index(num_frames: int, rng: np.random.Generator) -> int:
    """Stage-2 reference: uniform over the whole video, independent of the clip (as Moore's stage 2)."""
    if num_frames < 1:
        raise ClipTooShort(f"a video of {num_frames} frames has no reference frame")
    return int(rng.integers(0, num_frames))
