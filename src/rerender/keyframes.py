"""Which frames are key frames: uniform every K (the paper's default), adaptive where the content changes
(frame-difference based, as FRESCO), or the user's own edited key frames from a folder whose file names carry
their 0-based frame indices (`0000.png`, `0017.png`, ...; uneven spacing is fine)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

__all__ = ["adaptive_keys", "choose_keys", "indexed_images", "uniform_keys"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


def uniform_keys(num_frames: int, interval: int) -> list[int]:
    """0, K, 2K, ... (official: the last frames after the last key are propagated forward only)."""
    if interval < 1:
        raise ValueError(f"the key-frame interval must be >= 1, got {interval}")
    return list(range(0, num_frames, interval))


def adaptive_keys(frames: np.ndarray, interval: int, min_interval: int = 2, max_interval: int | None = None) -> list[int]:
    """As many keys as uniform spacing would give, placed at equal steps of accumulated change.

    The change between consecutive frames is their mean squared difference; a new key starts where the
    running sum crosses the next equal share of the total, so fast passages get denser keys. Gaps stay within
    [min_interval, max_interval] (max defaults to 2 * interval). `frames` is `t h w c` (any numeric dtype).
    """
    t = frames.shape[0]
    count = len(uniform_keys(t, interval))
    max_interval = max_interval or 2 * interval
    if min_interval < 1 or max_interval < min_interval:
        raise ValueError(f"need 1 <= min_interval <= max_interval, got {min_interval}, {max_interval}")
    if t < 2 or count < 2:
        return [0]
    x = frames.astype(np.float64)
    change = ((x[1:] - x[:-1]) ** 2).mean(axis=tuple(range(1, x.ndim)))
    cumulative = np.concatenate([[0.0], np.cumsum(change + 1e-12)])
    share = cumulative[-1] / count
    keys = [0]
    for i in range(1, t):
        gap = i - keys[-1]
        if gap >= max_interval or (gap >= min_interval and cumulative[i] - cumulative[keys[-1]] >= share):
            keys.append(i)
    return keys


def choose_keys(frames: np.ndarray, mode: str, interval: int, min_interval: int = 2, max_interval: int | None = None) -> list[int]:
    """`mode` "uniform" or "adaptive" (see those functions)."""
    if mode == "uniform":
        return uniform_keys(frames.shape[0], interval)
    if mode == "adaptive":
        return adaptive_keys(frames, interval, min_interval, max_interval)
    raise ValueError(f"rerender.keyframes.mode must be 'uniform' or 'adaptive', got {mode!r}")


def indexed_images(folder: str | Path, what: str) -> dict[int, Path]:
    """Image files of `folder` by the number in their names (the last run of digits): {index: path}."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{what}={folder}: not a folder")
    found: dict[int, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        digits = re.findall(r"\d+", path.stem)
        if not digits:
            raise ValueError(f"{what}={folder}: '{path.name}' has no frame number in its name (e.g. 0010.png)")
        index = int(digits[-1])
        if index in found:
            raise ValueError(f"{what}={folder}: '{found[index].name}' and '{path.name}' both claim frame {index}")
        found[index] = path
    if not found:
        raise FileNotFoundError(f"{what}={folder}: no {IMAGE_SUFFIXES} images in that folder")
    return dict(sorted(found.items()))
