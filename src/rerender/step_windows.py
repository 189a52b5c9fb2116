"""When each Rerender key-frame constraint fires during the denoising schedule.

Windows are fractions of the schedule (paper names: cross-frame attention, T_s for shape-aware fusion,
[T_p0, T_p1] for pixel-aware fusion, T_a for AdaIN); step index 0 is the noisiest. The official code turns a
window (a, b) into step indices with int(a * steps) and int(b * steps), inclusive at both ends for cross-frame
attention, shape-aware fusion and AdaIN, exclusive at both ends for pixel-aware fusion: with 20 steps the
defaults give cross 0-19, shape 0-2, pixel 11-15, AdaIN 16-19, and an AdaIN window (1, 1) never fires.
Not wired to a sampler yet: the shared denoising loop calls `active(name, i)` from its per-step hooks.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["StepWindows"]

INCLUSIVE = {"cross_attention": True, "shape_fusion": True, "pixel_fusion": False, "adain": True}


@dataclass(frozen=True)
class StepWindows:
    """Windows as fractions (start, end) of the schedule; defaults: the paper's (T_s 0.1, T_p 0.5-0.8, T_a 0.8)."""

    cross_attention: tuple[float, float] = (0.0, 1.0)
    shape_fusion: tuple[float, float] = (0.0, 0.1)
    pixel_fusion: tuple[float, float] = (0.5, 0.8)
    adain: tuple[float, float] = (0.8, 1.0)

    def __post_init__(self) -> None:
        for name in INCLUSIVE:
            start, end = getattr(self, name)
            if not 0.0 <= start <= end <= 1.0:
                raise ValueError(f"step window {name}={(start, end)} must satisfy 0 <= start <= end <= 1")

    def active(self, name: str, step: int, num_steps: int) -> bool:
        """Whether constraint `name` acts at step index `step` (0 = noisiest) of `num_steps`."""
        if name not in INCLUSIVE:
            raise ValueError(f"unknown constraint {name!r}; one of {sorted(INCLUSIVE)}")
        if not 0 <= step < num_steps:
            raise ValueError(f"step {step} outside the schedule of {num_steps} steps")
        start, end = (int(f * num_steps) for f in getattr(self, name))
        return start <= step <= end if INCLUSIVE[name] else start < step < end

    def steps(self, name: str, num_steps: int) -> list[int]:
        return [i for i in range(num_steps) if self.active(name, i, num_steps)]
