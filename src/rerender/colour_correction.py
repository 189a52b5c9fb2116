"""Optional colour alignment of Rerender's input key frames to the anchor's output (config `color_preserve`).

With `color_preserve` true (the official default, and in practice the only official behaviour: its JSON key is
misspelt `color_perserve`, so it cannot be turned off from a config file) the input frames are encoded as they
are. With false, each later key frame's input is matched to the anchor's stylised output before the SDEdit
encoding: per-channel histogram matching in Lab, then the input's own lightness is kept (the official
"luminosity" blend), so the new key frame starts from the anchor's palette. Images `3 H W` in [0, 1].
"""

from __future__ import annotations

import numpy as np
import torch
from skimage import color, exposure

__all__ = ["match_colours"]


def match_colours(image: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """`image` with the colour distribution (Lab a/b histograms) of `reference`, keeping its own lightness."""

    def lab(x: torch.Tensor) -> np.ndarray:
        return color.rgb2lab(x.detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy())

    source = lab(image)
    matched = exposure.match_histograms(source, lab(reference), channel_axis=2)
    matched[..., 0] = source[..., 0]
    rgb = np.clip(color.lab2rgb(matched), 0, 1)
    return torch.from_numpy(rgb).permute(2, 0, 1).to(image.device, image.dtype)
