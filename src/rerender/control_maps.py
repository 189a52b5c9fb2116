"""ControlNet condition images for Rerender-A-Video's key frames: Canny edges or HED soft edges.

Frames in, control images out, batched: `(N, 3, H, W)` RGB in [0, 1] -> `(N, 3, H, W)` in [0, 1], the
single-channel map repeated to 3 channels, as the official code feeds ControlNet (`HWC3(map) / 255`).
Canny is OpenCV's on the 8-bit RGB frame with the official thresholds (100/200, `canny_low`/`canny_high`);
HED is `src.rerender.hed` from a local annotator checkpoint.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from src.rerender.hed import load_hed

__all__ = ["CONTROL_TYPES", "ControlMapper", "canny_map"]

CONTROL_TYPES = ("canny", "hed")


def canny_map(frames: Tensor, low: float = 100, high: float = 200) -> Tensor:
    """OpenCV Canny per frame on the 8-bit RGB image (gradients of all three channels, as the official
    annotator calls it); `(N, 3, H, W)` in [0, 1] -> `(N, 1, H, W)` in {0, 1}."""
    import cv2

    rgb = (
        (frames.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    )
    edges = np.stack([cv2.Canny(np.ascontiguousarray(f), low, high) for f in rgb])
    return torch.from_numpy(edges).to(frames.device, torch.float32)[:, None] / 255.0


class ControlMapper:
    """The control image of each frame for the configured ControlNet (`control_type`: canny | hed).

    hed_checkpoint is read only for HED; batch_size bounds how many frames HED runs on at once (memory).
    """

    def __init__(
        self,
        control_type: str = "hed",
        canny_low: float = 100,
        canny_high: float = 200,
        hed_checkpoint: str | Path | None = None,
        batch_size: int = 8,
        device: str | torch.device = "cpu",
        key_prefix: str = "model.control_map",
    ) -> None:
        if control_type not in CONTROL_TYPES:
            raise ValueError(f"control_type must be one of {CONTROL_TYPES}, got {control_type!r}")
        if not 0 <= canny_low <= canny_high:
            raise ValueError(
                f"{key_prefix}: need 0 <= canny_low <= canny_high, got {canny_low} and {canny_high}"
            )
        self.control_type = control_type
        self.canny_low, self.canny_high = canny_low, canny_high
        self.batch_size = max(1, int(batch_size))
        self.device = torch.device(device)
        self.hed = (
            load_hed(hed_checkpoint, f"{key_prefix}.hed_checkpoint").to(self.device)
            if control_type == "hed"
            else None
        )

    @torch.no_grad()
    def __call__(self, frames: Tensor) -> Tensor:
        if frames.ndim != 4 or frames.shape[1] != 3:
            raise ValueError(f"expected frames (N, 3, H, W) in [0, 1], got shape {tuple(frames.shape)}")
        if self.hed is None:
            edges = canny_map(frames, self.canny_low, self.canny_high)
        else:
            edges = torch.cat(
                [self.hed(chunk.to(self.device, torch.float32)) for chunk in frames.split(self.batch_size)]
            ).to(frames.device)
        return edges.expand(-1, 3, -1, -1).contiguous()
