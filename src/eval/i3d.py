"""Inception-I3D, the FVD/KVD feature network: 400-d Kinetics logits averaged over time.

Input to `I3DFeatureExtractor`: videos `(B, T, C, H, W)` float in [0, 1] (see video_input.py). It brings
every frame to 224x224 and scales to [-1, 1] the way its FVD flavour's codebase does (fvd_flavours.py), then
runs either

- `InceptionI3d` with the TF-Hub-derived state dict `i3d_pretrained_400.pt` (TATS / VideoGPT / cd-fvd), with
  the flavour's BatchNorm eps (TF-Hub's graph 1e-3, VideoGPT's port 1e-5), or
- StyleGAN-V's TorchScript port `i3d_torchscript.pt` (raw logits before the softmax).

Not piergiaj's `rgb_imagenet.pt`: that converts DeepMind's ImageNet-inflated checkpoint, whose weights
differ from TF-Hub's i3d-kinetics-400/1, the network every published FVD uses.
Inside the network, tensors are `b c t h w`.
"""

from __future__ import annotations

import math
import zipfile
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from src.eval.fvd_flavours import FVDFlavour, ResizeRule, get_flavour
from src.eval.weights import require_weight_file

I3D_NUM_FEATURES = 400
I3D_RESOLUTION = 224
I3D_PUBLISHED_AT = (
    "i3d_pretrained_400.pt: https://github.com/songweige/TATS/raw/main/tats/fvd/i3d_pretrained_400.pt "
    "(converted from TF-Hub deepmind/i3d-kinetics-400/1); i3d_torchscript.pt: "
    "https://www.dropbox.com/s/ge9e5ujwgetktms/i3d_torchscript.pt?dl=1 (StyleGAN-V)"
)


def _same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TF 'SAME' padding (front, back) for one dim: output length ceil(size / stride)."""
    total = max(kernel - stride, 0) if size % stride == 0 else max(kernel - size % stride, 0)
    return total // 2, total - total // 2


def _pad_same(x: Tensor, kernel: tuple[int, int, int], stride: tuple[int, int, int]) -> Tensor:
    pads: list[int] = []
    for dim in (2, 1, 0):  # F.pad takes the last dim first: w, h, t
        pads.extend(_same_padding(x.shape[2 + dim], kernel[dim], stride[dim]))
    return F.pad(x, pads)


class Unit3D(nn.Module):
    """Conv3d (TF 'SAME' padding) + optional BatchNorm (no learned scale in TF; stored as ones) + ReLU."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel: tuple[int, int, int] = (1, 1, 1),
        stride: tuple[int, int, int] = (1, 1, 1),
        batch_norm: bool = True,
        activation: bool = True,
        bias: bool = False,
        bn_eps: float = 1e-3,
    ) -> None:
        super().__init__()
        self.kernel, self.stride, self.activation = kernel, stride, activation
        self.conv3d = nn.Conv3d(in_channels, out_channels, kernel, stride=stride, padding=0, bias=bias)
        self.bn = nn.BatchNorm3d(out_channels, eps=bn_eps) if batch_norm else None

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv3d(_pad_same(x, self.kernel, self.stride))
        if self.bn is not None:
            x = self.bn(x)
        return F.relu(x) if self.activation else x


class MaxPool3dSame(nn.Module):
    """Max pooling with TF 'SAME' padding; zero padding equals TF's because inputs follow a ReLU."""

    def __init__(self, kernel: tuple[int, int, int], stride: tuple[int, int, int]) -> None:
        super().__init__()
        self.kernel, self.stride = kernel, stride

    def forward(self, x: Tensor) -> Tensor:
        return F.max_pool3d(_pad_same(x, self.kernel, self.stride), self.kernel, self.stride)


class InceptionBlock(nn.Module):
    """Four-branch Inception module; branch names match the TF-Hub-derived state dict (b0, b1a, ...)."""

    def __init__(self, in_channels: int, widths: tuple[int, int, int, int, int, int], bn_eps: float) -> None:
        super().__init__()
        w0, w1a, w1b, w2a, w2b, w3 = widths
        self.b0 = Unit3D(in_channels, w0, bn_eps=bn_eps)
        self.b1a = Unit3D(in_channels, w1a, bn_eps=bn_eps)
        self.b1b = Unit3D(w1a, w1b, kernel=(3, 3, 3), bn_eps=bn_eps)
        self.b2a = Unit3D(in_channels, w2a, bn_eps=bn_eps)
        self.b2b = Unit3D(w2a, w2b, kernel=(3, 3, 3), bn_eps=bn_eps)
        self.b3a = MaxPool3dSame((3, 3, 3), (1, 1, 1))
        self.b3b = Unit3D(in_channels, w3, bn_eps=bn_eps)
        self.out_channels = w0 + w1b + w2b + w3

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat(
            [self.b0(x), self.b1b(self.b1a(x)), self.b2b(self.b2a(x)), self.b3b(self.b3a(x))], dim=1
        )


_INCEPTION_WIDTHS: dict[str, tuple[int, int, int, int, int, int]] = {
    "Mixed_3b": (64, 96, 128, 16, 32, 32),
    "Mixed_3c": (128, 128, 192, 32, 96, 64),
    "Mixed_4b": (192, 96, 208, 16, 48, 64),
    "Mixed_4c": (160, 112, 224, 24, 64, 64),
    "Mixed_4d": (128, 128, 256, 24, 64, 64),
    "Mixed_4e": (112, 144, 288, 32, 64, 64),
    "Mixed_4f": (256, 160, 320, 32, 128, 128),
    "Mixed_5b": (256, 160, 320, 32, 128, 128),
    "Mixed_5c": (384, 192, 384, 48, 128, 128),
}


class InceptionI3d(nn.Module):
    """Inception-v1 I3D (Carreira & Zisserman 2017) up to the Kinetics logits, averaged over time.

    forward: `(B, 3, T, 224, 224)` in [-1, 1] -> `(B, num_classes)` pre-softmax logits. Module names equal
    those of `i3d_pretrained_400.pt`, so it loads strictly. `bn_eps` is 1e-3 as in the TF-Hub graph;
    VideoGPT's port uses 1e-5 (1.6% of FVD on random weights).
    """

    min_frames = 9  # x8 temporal downsampling, then a temporal average pool of size 2

    def __init__(
        self, num_classes: int = I3D_NUM_FEATURES, in_channels: int = 3, bn_eps: float = 1e-3
    ) -> None:
        super().__init__()
        self.Conv3d_1a_7x7 = Unit3D(in_channels, 64, kernel=(7, 7, 7), stride=(2, 2, 2), bn_eps=bn_eps)
        self.MaxPool3d_2a_3x3 = MaxPool3dSame((1, 3, 3), (1, 2, 2))
        self.Conv3d_2b_1x1 = Unit3D(64, 64, bn_eps=bn_eps)
        self.Conv3d_2c_3x3 = Unit3D(64, 192, kernel=(3, 3, 3), bn_eps=bn_eps)
        self.MaxPool3d_3a_3x3 = MaxPool3dSame((1, 3, 3), (1, 2, 2))
        channels = 192
        for name in ("Mixed_3b", "Mixed_3c"):
            channels = self._add_block(name, channels, bn_eps)
        self.MaxPool3d_4a_3x3 = MaxPool3dSame((3, 3, 3), (2, 2, 2))
        for name in ("Mixed_4b", "Mixed_4c", "Mixed_4d", "Mixed_4e", "Mixed_4f"):
            channels = self._add_block(name, channels, bn_eps)
        self.MaxPool3d_5a_2x2 = MaxPool3dSame((2, 2, 2), (2, 2, 2))
        for name in ("Mixed_5b", "Mixed_5c"):
            channels = self._add_block(name, channels, bn_eps)
        self.avg_pool = nn.AvgPool3d(kernel_size=(2, 7, 7), stride=(1, 1, 1))
        self.logits = Unit3D(
            channels, num_classes, batch_norm=False, activation=False, bias=True, bn_eps=bn_eps
        )

    def _add_block(self, name: str, in_channels: int, bn_eps: float) -> int:
        block = InceptionBlock(in_channels, _INCEPTION_WIDTHS[name], bn_eps)
        self.add_module(name, block)
        return block.out_channels

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim != 5 or x.shape[2] < self.min_frames:
            raise ValueError(
                f"InceptionI3d needs (B, 3, T, H, W) with T >= {self.min_frames}, got {tuple(x.shape)}"
            )
        for module in self.children():
            if module is self.avg_pool:
                break
            x = module(x)
        x = self.logits(self.avg_pool(x))  # (B, classes, T', 1, 1); dropout is identity at eval
        return x.flatten(3).mean(dim=(2, 3))


def min_frames_for_i3d() -> int:
    """Shortest clip the network accepts (9 frames at 224x224)."""
    return InceptionI3d.min_frames


def _tf1_bilinear_matrix(in_size: int, out_size: int, device: torch.device) -> Tensor:
    """(out, in) interpolation weights of TF1 `resize_bilinear` (align_corners=False, no half-pixel)."""
    src = torch.arange(out_size, device=device, dtype=torch.float64) * (in_size / out_size)
    lo = src.floor().long().clamp(max=in_size - 1)
    hi = (lo + 1).clamp(max=in_size - 1)
    frac = (src - lo.double()).float()
    weights = torch.zeros(out_size, in_size, device=device)
    rows = torch.arange(out_size, device=device)
    weights.index_put_((rows, lo), 1 - frac, accumulate=True)
    weights.index_put_((rows, hi), frac, accumulate=True)
    return weights


def squash_tf1_bilinear(frames: Tensor, size: int = I3D_RESOLUTION) -> Tensor:
    """`(N, C, H, W)` -> size x size, aspect ignored, exactly TF1 `tf.image.resize_bilinear` (the TF script)."""
    rows = _tf1_bilinear_matrix(frames.shape[-2], size, frames.device)
    cols = _tf1_bilinear_matrix(frames.shape[-1], size, frames.device)
    return rows @ frames @ cols.T


def short_side_center_crop(frames: Tensor, size: int = I3D_RESOLUTION) -> Tensor:
    """`(N, C, H, W)` -> short side to `size` (PyTorch bilinear, long side rounded up), centre crop (VideoGPT)."""
    h, w = frames.shape[-2:]
    scale = size / min(h, w)
    target = (size, math.ceil(w * scale)) if h < w else (math.ceil(h * scale), size)
    out = F.interpolate(frames, size=target, mode="bilinear", align_corners=False)
    top, left = (out.shape[-2] - size) // 2, (out.shape[-1] - size) // 2
    return out[..., top : top + size, left : left + size]


_RESIZERS = {"squash_tf1_bilinear": squash_tf1_bilinear, "short_side_center_crop": short_side_center_crop}


def preprocess_for_i3d(videos: Tensor, resize: ResizeRule = "squash_tf1_bilinear") -> Tensor:
    """`(B, T, 3, H, W)` in [0, 1] -> `(B, 3, T, 224, 224)` in [-1, 1] with the flavour's resize rule."""
    if resize not in _RESIZERS:
        raise ValueError(f"resize rule {resize!r} is not done outside the network; expected one of {sorted(_RESIZERS)}")
    b, t = videos.shape[:2]
    frames = _RESIZERS[resize](videos.flatten(0, 1).float())
    frames = frames.reshape(b, t, *frames.shape[1:]).transpose(1, 2)
    return 2.0 * frames - 1.0


def _is_torchscript_archive(path: Path) -> bool:
    """TorchScript archives hold a `code/` folder; torch.save archives do not."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any("/code/" in name or name.startswith("code/") for name in archive.namelist())


class I3DFeatureExtractor(nn.Module):
    """Videos `(B, T, 3, H, W)` in [0, 1] -> `(B, 400)` I3D logits, preprocessed as the flavour's codebase does.

    StyleGAN-V (resize "torchscript_internal") hands uint8 `b c t h w` clips to the TorchScript with
    rescale=True, resize=True: its resize is inside that file. Every other flavour resizes here and feeds
    [-1, 1] clips (to a TorchScript with rescale=False, resize=False).
    """

    num_features = I3D_NUM_FEATURES

    def __init__(self, network: nn.Module, torchscript: bool = False, flavour: str | FVDFlavour = "tf_hub") -> None:
        super().__init__()
        self.network = network
        self.torchscript = torchscript
        self.flavour = get_flavour(flavour) if isinstance(flavour, str) else flavour
        if self.flavour.resize == "torchscript_internal" and not torchscript:
            raise ValueError(
                f"FVD flavour {self.flavour.name!r} resizes inside StyleGAN-V's i3d_torchscript.pt; it needs that "
                f"TorchScript file, not a state dict"
            )
        self.min_frames = min_frames_for_i3d()
        self.network.eval()
        for param in self.network.parameters():  # ScriptModules lack requires_grad_()
            param.requires_grad_(False)

    def train(self, mode: bool = True) -> I3DFeatureExtractor:
        """The feature network always stays in eval mode (BatchNorm running statistics)."""
        return super().train(False)

    @torch.no_grad()
    def forward(self, videos: Tensor) -> Tensor:
        if videos.shape[1] < self.min_frames:
            raise ValueError(
                f"I3D needs clips of at least {self.min_frames} frames, got {videos.shape[1]} "
                f"(shape {tuple(videos.shape)}); use longer clips or a smaller num_frames stride."
            )
        if self.flavour.resize == "torchscript_internal":
            clips = (videos * 255).round().to(torch.uint8).transpose(1, 2).contiguous()
            feats = self.network(clips, rescale=True, resize=True, return_features=True)
        elif self.torchscript:
            x = preprocess_for_i3d(videos, self.flavour.resize)
            feats = self.network(x, rescale=False, resize=False, return_features=True)
        else:
            feats = self.network(preprocess_for_i3d(videos, self.flavour.resize))
        if feats.ndim != 2 or feats.shape[1] != self.num_features:
            raise RuntimeError(
                f"the I3D network returned shape {tuple(feats.shape)}, expected (B, {self.num_features}); "
                f"is the file the 400-class Kinetics I3D?"
            )
        return feats.float()


def load_i3d_extractor(
    path: str | Path | None,
    config_key: str = "eval.i3d_weights",
    weights_format: Literal["auto", "state_dict", "torchscript"] = "auto",
    flavour: str | FVDFlavour = "tf_hub",
) -> I3DFeatureExtractor:
    """Build the FVD extractor of `flavour` from a local `i3d_pretrained_400.pt` or `i3d_torchscript.pt`.

    "auto" tells the two formats apart by the archive layout. The state dict loads strictly into InceptionI3d
    with the flavour's BatchNorm eps; a flavour bound to one file format refuses the other.
    """
    spec = get_flavour(flavour) if isinstance(flavour, str) else flavour
    file = require_weight_file(path, config_key, I3D_PUBLISHED_AT)
    if weights_format == "auto":
        weights_format = "torchscript" if _is_torchscript_archive(file) else "state_dict"
    if weights_format not in ("state_dict", "torchscript"):
        raise ValueError(
            f"weights_format must be 'auto', 'state_dict' or 'torchscript', got {weights_format!r}"
        )
    if spec.network != "any" and spec.network != weights_format:
        wanted = "i3d_torchscript.pt (StyleGAN-V)" if spec.network == "torchscript" else "i3d_pretrained_400.pt"
        raise ValueError(
            f"FVD flavour {spec.name!r} runs {wanted}, but '{file}' ({config_key}) is a {weights_format}; "
            f"point {config_key} at {wanted} or pick another flavour (tf_hub accepts both)"
        )
    if weights_format == "torchscript":
        network = torch.jit.load(str(file), map_location="cpu")
        return I3DFeatureExtractor(network, torchscript=True, flavour=spec)
    state = torch.load(file, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise ValueError(
            f"'{file}' ({config_key}) is not a state dict; for a TorchScript file use weights_format='torchscript'"
        )
    network = InceptionI3d(I3D_NUM_FEATURES, bn_eps=float(spec.bn_eps))
    try:
        network.load_state_dict(state, strict=True)
    except RuntimeError as error:
        raise ValueError(
            f"'{file}' ({config_key}) does not match the Kinetics-400 Inception-I3D ({error}). Expected the "
            f"TF-Hub-derived i3d_pretrained_400.pt, not piergiaj's rgb_imagenet.pt."
        ) from error
    return I3DFeatureExtractor(network, torchscript=False, flavour=spec)
