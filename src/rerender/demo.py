"""The demo's procedural case: a clip from the open-domain demo generator (a textured shape moving over a
textured scene, or a camera pan) and a known, time-independent stylisation of every frame, so the
propagation of a few stylised key frames can be scored against the stylised truth of all frames.

The stylisation is a per-pixel cyclic colour remap plus dark outlines where the input has edges: it sticks
to the surfaces as they move, like a user's painted key frames, and no method can guess it from the input
alone. Frames `t h w 3` uint8.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from src.data.demo_scenes import render_scene_clip

__all__ = ["demo_video", "stylise"]


def stylise(frames: np.ndarray) -> np.ndarray:
    """`t h w 3` uint8 -> the stylised frames (cyclic colour remap, outlines on edges)."""
    x = torch.from_numpy(frames).float().div(255).permute(0, 3, 1, 2)
    mix = torch.tensor([[0.2, 1.3, 0.4], [1.1, 0.3, 0.6], [0.5, 0.6, 1.2]])
    phase = torch.tensor([0.1, 0.45, 0.8])
    remapped = 0.5 + 0.45 * torch.sin(2 * torch.pi * (torch.einsum("oc,tchw->tohw", mix, x) + phase[:, None, None]))
    gray = x.mean(1, keepdim=True)
    sobel = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])
    kernels = torch.stack([sobel, sobel.t()])[:, None]
    grad = F.conv2d(F.pad(gray, (1, 1, 1, 1), mode="replicate"), kernels).norm(dim=1, keepdim=True)
    outlined = remapped * (1 - (grad * 2.5).clamp(0, 0.8))
    return (outlined.clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).numpy()


def demo_video(seed: int, num_frames: int, height: int, width: int) -> tuple[np.ndarray, str]:
    """(frames `t h w 3` uint8, caption) of the demo generator's clip `seed`."""
    clip = render_scene_clip(seed, num_frames, height, width)
    return clip.frames, clip.caption
