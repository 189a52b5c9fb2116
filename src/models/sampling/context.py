"""Context windows: sample a video longer than the motion modules' window in overlapping windows.

As the public Animate Anyone pipelines do (Moore-AnimateAnyone's "uniform" context, MagicAnimate): at every
denoising step the model sees windows of `frames` consecutive frames whose starts are `frames - overlap`
apart (the last window ends at the last frame), and each frame's prediction is the mean over the windows that
hold it. Everything outside the motion modules (ReferenceNet bank, pose features) is computed once per run.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class ContextWindows:
    """`frames` per window (the motion modules' length), `overlap` frames shared by neighbouring windows."""

    frames: int
    overlap: int = 0

    def __post_init__(self) -> None:
        if self.frames < 1:
            raise ValueError(f"sample.context_frames must be >= 1, got {self.frames}.")
        if not 0 <= self.overlap < self.frames:
            raise ValueError(
                f"sample.context_overlap={self.overlap} must be in [0, context_frames={self.frames}); "
                "windows that overlap entirely never advance."
            )

    @property
    def stride(self) -> int:
        return self.frames - self.overlap

    def windows(self, num_frames: int) -> list[torch.Tensor]:
        """Frame indices of each window over a `num_frames` video (one window when it fits)."""
        if num_frames <= self.frames:
            return [torch.arange(num_frames)]
        starts = list(range(0, num_frames - self.frames + 1, self.stride))
        if starts[-1] + self.frames < num_frames:
            starts.append(num_frames - self.frames)
        return [torch.arange(s, s + self.frames) for s in starts]

    def boundaries(self, num_frames: int) -> list[int]:
        """Frames f whose set of covering windows differs from frame f-1's: the transitions (f-1, f) where a
        window starts or ends, the places a seam would show."""
        covering = [set() for _ in range(num_frames)]
        for i, frames in enumerate(self.windows(num_frames)):
            for f in frames.tolist():
                covering[f].add(i)
        return [f for f in range(1, num_frames) if covering[f] != covering[f - 1]]

    def apply(
        self,
        model: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        x: torch.Tensor,
    ) -> torch.Tensor:
        """Mean over windows of `model(x[:, :, frames], frames)` per frame; x is `b c t h w`."""
        num_frames = x.shape[2]
        windows = self.windows(num_frames)
        if len(windows) == 1:
            return model(x, windows[0])
        total, count = None, torch.zeros(num_frames, device=x.device)
        for frames in windows:
            out = model(x[:, :, frames.to(x.device)], frames).float()
            if total is None:
                total = torch.zeros(*out.shape[:2], num_frames, *out.shape[3:], device=x.device)
            total[:, :, frames.to(x.device)] += out
            count[frames.to(x.device)] += 1
        return total / count.view(1, 1, -1, 1, 1)
