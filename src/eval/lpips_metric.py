"""VideoLPIPS: LPIPS (v0.1) per frame, averaged over all frames, with the backbone from a local file.

`update(preds, target)` takes videos `(B, T, C, H, W)` of equal shape, uint8 in [0, 255] or float in
[0, 1] (video_input.py). The backbone (AlexNet default, VGG16 option) is torchvision's architecture
loaded strictly from `alexnet-owt-7be5be79.pth` / `vgg16-397923af.pth`; the LPIPS linear heads are the
v0.1 weights that ship inside the torchmetrics wheel (identical to the `lpips` package's).

Protocols: "standard" maps [0, 1] to [-1, 1] as LPIPS expects; "disco" is the DisCo/TikTok quirk (VGG
fed `ToTensor()` images in [0, 1] without rescaling) that the Animate Anyone comparison tables used.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor, nn
from torchvision import models

from src.eval.feature_stats import MergeableMetric
from src.eval.video_input import check_same_shape, video_to_unit_float
from src.eval.weights import require_weight_file

Backbone = Literal["alex", "vgg"]
_BACKBONE_FILES = {
    "alex": "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth (torchvision AlexNet IMAGENET1K_V1)",
    "vgg": "https://download.pytorch.org/models/vgg16-397923af.pth (torchvision VGG16 IMAGENET1K_V1)",
}
# Slices of torchvision's `features` ending at the ReLUs LPIPS taps (relu1..relu5 / relu1_2..relu5_3).
_SLICE_ENDS = {"alex": (2, 5, 8, 10, 12), "vgg": (4, 9, 16, 23, 30)}
_CHANNELS = {"alex": (64, 192, 384, 256, 256), "vgg": (64, 128, 256, 512, 512)}
_SHIFT = (-0.030, -0.088, -0.188)
_SCALE = (0.458, 0.448, 0.450)


def build_backbone_features(net: Backbone, weights_path: str | Path | None, config_key: str) -> nn.Sequential:
    """torchvision AlexNet/VGG16 `features`, weights loaded strictly from the local ImageNet checkpoint."""
    if net not in _BACKBONE_FILES:
        raise ValueError(f"LPIPS backbone must be 'alex' or 'vgg', got {net!r}")
    file = require_weight_file(weights_path, config_key, _BACKBONE_FILES[net])
    with torch.device("meta"):  # no random init of 138M VGG parameters that the load replaces anyway
        model = models.alexnet(weights=None) if net == "alex" else models.vgg16(weights=None)
    state = torch.load(file, map_location="cpu", weights_only=True)
    try:
        model.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as error:
        raise ValueError(f"'{file}' ({config_key}) is not a torchvision {net} checkpoint: {error}") from error
    return model.features


def load_lpips_linear_heads(net: Backbone) -> dict[str, Tensor]:
    """The LPIPS v0.1 linear-head weights packaged with torchmetrics (lin0..lin4 `model.1.weight`)."""
    path = resources.files("torchmetrics.functional.image") / "lpips_models" / f"{net}.pth"
    with resources.as_file(path) as file:
        return torch.load(file, map_location="cpu", weights_only=True)


class LPIPSNetwork(nn.Module):
    """LPIPS distance between image batches `(N, 3, H, W)` already on the network's input scale."""

    def __init__(self, features: nn.Sequential, net: Backbone) -> None:
        super().__init__()
        starts = (0, *_SLICE_ENDS[net][:-1])
        self.slices = nn.ModuleList(
            nn.Sequential(*[features[i] for i in range(s, e)]) for s, e in zip(starts, _SLICE_ENDS[net])
        )
        for module in self.slices.modules():
            if isinstance(module, nn.ReLU):
                module.inplace = False  # tapped activations must not be overwritten by the next slice
        self.heads = nn.ModuleList(nn.Conv2d(c, 1, 1, bias=False) for c in _CHANNELS[net])
        heads = load_lpips_linear_heads(net)
        for i, head in enumerate(self.heads):
            head.weight.data.copy_(heads[f"lin{i}.model.1.weight"])
        self.register_buffer("shift", torch.tensor(_SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(_SCALE).view(1, 3, 1, 1), persistent=False)
        self.eval().requires_grad_(False)

    def train(self, mode: bool = True) -> LPIPSNetwork:
        return super().train(False)

    def forward(self, x0: Tensor, x1: Tensor) -> Tensor:
        h0, h1 = (x0 - self.shift) / self.scale, (x1 - self.shift) / self.scale
        total = torch.zeros(x0.shape[0], device=x0.device, dtype=x0.dtype)
        for block, head in zip(self.slices, self.heads):
            h0, h1 = block(h0), block(h1)
            n0 = h0 / (h0.pow(2).sum(dim=1, keepdim=True).sqrt() + 1e-10)
            n1 = h1 / (h1.pow(2).sum(dim=1, keepdim=True).sqrt() + 1e-10)
            total = total + head((n0 - n1).pow(2)).mean(dim=(1, 2, 3))
        return total


class VideoLPIPS(MergeableMetric):
    """Mean per-frame LPIPS over all frames (lower is better)."""

    is_differentiable = False
    higher_is_better = False

    def __init__(
        self,
        backbone_weights: str | Path | None,
        net: Backbone | None = None,
        protocol: Literal["standard", "disco"] = "standard",
        config_key: str = "eval.lpips_backbone",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if protocol not in ("standard", "disco"):
            raise ValueError(f"protocol must be 'standard' or 'disco', got {protocol!r}")
        net = net or ("vgg" if protocol == "disco" else "alex")
        if protocol == "disco" and net != "vgg":
            raise ValueError("the disco protocol uses LPIPS-VGG; drop net= or set net='vgg'")
        self.net_name, self.protocol = net, protocol
        self.lpips = LPIPSNetwork(build_backbone_features(net, backbone_weights, config_key), net)
        self.add_mergeable_state("value_sum", torch.zeros((), dtype=torch.float64), "sum")
        self.add_mergeable_state("frame_count", torch.zeros((), dtype=torch.float64), "sum")

    def partial_signature(self) -> dict[str, Any]:
        return {**super().partial_signature(), "net": self.net_name, "protocol": self.protocol}

    def update(self, preds: Tensor, target: Tensor) -> None:
        """Add generated videos `preds` and their references `target`, both `(B, T, C, H, W)`."""
        preds_f, target_f = video_to_unit_float(preds, "preds"), video_to_unit_float(target, "target")
        check_same_shape(preds_f, target_f, "preds", "target")
        x0, x1 = preds_f.flatten(0, 1), target_f.flatten(0, 1)
        if self.protocol == "standard":
            x0, x1 = 2 * x0 - 1, 2 * x1 - 1
        with torch.no_grad():
            values = self.lpips(x0, x1)
        self.value_sum = self.value_sum + values.to(torch.float64).sum()
        self.frame_count = self.frame_count + values.numel()

    def compute(self) -> Tensor:
        if self.frame_count == 0:
            raise RuntimeError("VideoLPIPS has no frames; call update(preds, target) first")
        return self.value_sum / self.frame_count
