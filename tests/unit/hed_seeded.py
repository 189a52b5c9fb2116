"""Seeded stand-in weights and a test picture for the HED annotator: shared by the unit tests and by the script
that ran the official annotator code on them (tests/data/hed_reference/make_reference.py)."""

from __future__ import annotations

import numpy as np
import torch

from src.rerender.hed import HEDNet


def seeded_hed_state(seed: int = 0) -> dict[str, torch.Tensor]:
    """He-scaled random convolutions and a non-zero input offset, so every stage contributes to the edge map."""
    torch.manual_seed(seed)
    net = HEDNet()
    with torch.no_grad():
        net.norm.copy_(torch.tensor([40.0, 50.0, 60.0]).view(1, 3, 1, 1))
        for conv in net.modules():
            if isinstance(conv, torch.nn.Conv2d):
                conv.weight.normal_(0, (2.0 / conv.weight[0].numel()) ** 0.5)
                conv.bias.normal_(0, 0.1)
    return net.state_dict()


def annotator_picture(height: int = 64, width: int = 128) -> np.ndarray:
    """`height x width x 3` uint8: two overlapping rectangles and a diagonal ramp, not square (catches H/W swaps); multiples of 64 as the annotator resizes to them."""
    y, x = np.mgrid[:height, :width]
    image = np.stack([(x * 4) % 256, (y * 6) % 256, ((x + y) * 3) % 256], axis=2).astype(np.uint8)
    image[8:40, 10:60] = (230, 120, 40)
    image[24:56, 50:110] = (30, 200, 220)
    return image
