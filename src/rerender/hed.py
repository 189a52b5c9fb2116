"""HED soft-edge detector of ControlNet's annotators (the Apache-2.0 HED of `lllyasviel/Annotators`,
`ControlNetHED.pth`), the network that made the maps `control_sd15_hed.pth` was trained on.

Our own module with the file's parameter names, loaded strictly (no maintained package fits: controlnet-aux
works one image at a time in numpy and pulls in opencv-python, which clashes with our headless OpenCV).
Facts from the annotator: RGB input on the 0..255 scale minus a learnt per-channel offset; five VGG-like
stages (2, 2, 3, 3, 3 convolutions with ReLU; 2x2 max-pool before stages 2-5), each with a 1x1 projection
to one edge logit map; the five maps are resized bilinearly to the input size, averaged, and squashed by a
sigmoid. The official code then stores the map as uint8 (truncating); `quantize=True` does the same.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from src.models.weights import load_state_dict_file, load_strict, require_file

__all__ = ["HED_PUBLISHED_AT", "HEDNet", "load_hed"]

HED_PUBLISHED_AT = "https://huggingface.co/lllyasviel/Annotators (ControlNetHED.pth)"
_STAGES = ((3, 64, 2), (64, 128, 2), (128, 256, 3), (256, 512, 3), (512, 512, 3))  # (in, out, convolutions)


class _Stage(nn.Module):
    """Convolutions with ReLU, then a 1x1 projection of the features to one edge logit map."""

    def __init__(self, cin: int, cout: int, n: int) -> None:
        super().__init__()
        self.convs = nn.Sequential(
            *[nn.Conv2d(cin if i == 0 else cout, cout, 3, padding=1) for i in range(n)]
        )
        self.projection = nn.Conv2d(cout, 1, 1)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        for conv in self.convs:
            x = F.relu(conv(x))
        return x, self.projection(x)


class HEDNet(nn.Module):
    """(N, 3, H, W) RGB in [0, 1] -> (N, 1, H, W) soft edges in [0, 1]."""

    def __init__(self) -> None:
        super().__init__()
        self.norm = nn.Parameter(torch.zeros(1, 3, 1, 1))
        for i, (cin, cout, n) in enumerate(_STAGES, start=1):
            self.add_module(f"block{i}", _Stage(cin, cout, n))

    def forward(self, rgb: Tensor, quantize: bool = True) -> Tensor:
        h = rgb * 255.0 - self.norm
        logits = []
        for i in range(1, len(_STAGES) + 1):
            if i > 1:
                h = F.max_pool2d(h, kernel_size=2, stride=2)
            h, logit = getattr(self, f"block{i}")(h)
            logits.append(F.interpolate(logit, size=rgb.shape[-2:], mode="bilinear", align_corners=False))
        edge = torch.sigmoid(torch.stack(logits).double().mean(0))  # float64 as the annotator: near-saturated
        edge = torch.floor(edge * 255.0) / 255.0 if quantize else edge  # edges would round to 255 in float32
        return edge.to(rgb.dtype)


def load_hed(path: str | Path | None, config_key: str = "model.control_map.hed_checkpoint") -> HEDNet:
    """The HED network with the weights of `path`, loaded strictly; a missing file names `config_key`."""
    path = require_file(path, config_key, HED_PUBLISHED_AT)
    net = HEDNet()
    load_strict(
        net,
        load_state_dict_file(path),
        source=f"{path} (config key {config_key})",
        hint="Expected the Apache-2.0 HED annotator of ControlNet (ControlNetHED.pth from "
        "lllyasviel/Annotators), not the older network-bsds500.pth.",
    )
    return net.eval().requires_grad_(False)
