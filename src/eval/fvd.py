"""FVD and KVD: Fréchet and kernel distances between I3D features of real and generated videos.

`update(videos, real)` takes videos `(B, T, C, H, W)`, uint8 in [0, 255] or float in [0, 1] (see
video_input.py). With `num_frames=16` (StyleGAN-V's fvd2048_16f) the first 16 frames of each video are
used and shorter videos are an error; `num_frames=None` feeds whole videos. The extractor is "i3d"
(weights from a local file) or any nn.Module mapping `(B, T, 3, H, W)` float [0, 1] clips to `(B, D)`
features, as torchmetrics' FID accepts a custom module.

`flavour` (fvd_flavours.py: tf_hub, stylegan_v, common_metrics, videogpt) fixes every convention in which FVD codebases
differ: I3D preprocessing and BatchNorm eps, uint8 quantisation of float frames, the covariance
normalisation, and KVD's estimator and scale. `settings_record()` is what metrics.json stores.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor, nn

from src.eval.distances import frechet_distance, polynomial_mmd_per_subset
from src.eval.feature_stats import MergeableMetric
from src.eval.fvd_flavours import FVDFlavour, get_flavour
from src.eval.i3d import load_i3d_extractor
from src.eval.video_input import video_to_unit_float


def build_video_extractor(
    extractor: str | nn.Module,
    weights_path: str | Path | None,
    weights_config_key: str,
    flavour: FVDFlavour,
) -> nn.Module:
    """ "i3d" -> the flavour's I3D extractor from `weights_path`; an nn.Module is used as given."""
    if isinstance(extractor, nn.Module):
        return extractor
    if extractor == "i3d":
        return load_i3d_extractor(weights_path, config_key=weights_config_key, flavour=flavour)
    raise ValueError(f"extractor must be 'i3d' or an nn.Module mapping videos to features, got {extractor!r}")


class _VideoFeatureMetric(MergeableMetric):
    """Shared part of FVD and KVD: input validation, clip selection and feature extraction."""

    is_differentiable = False
    higher_is_better = False

    def __init__(
        self,
        extractor: str | nn.Module = "i3d",
        weights_path: str | Path | None = None,
        weights_config_key: str = "eval.i3d_weights",
        num_frames: int | None = 16,
        feature_dim: int | None = None,
        flavour: str = "tf_hub",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.flavour = get_flavour(flavour)
        self.extractor = build_video_extractor(extractor, weights_path, weights_config_key, self.flavour)
        self.extractor.eval()
        for param in self.extractor.parameters():  # ScriptModules lack requires_grad_()
            param.requires_grad_(False)
        self.extractor_name = extractor if isinstance(extractor, str) else type(extractor).__name__
        self.feature_dim = (
            feature_dim if feature_dim is not None else getattr(self.extractor, "num_features", None)
        )
        if self.feature_dim is None:
            raise ValueError(
                f"cannot tell the feature size of extractor {self.extractor_name}: pass feature_dim=... or give "
                f"the module a `num_features` attribute."
            )
        self.min_frames = int(getattr(self.extractor, "min_frames", 1))
        if num_frames is not None and num_frames < self.min_frames:
            raise ValueError(
                f"num_frames={num_frames} is shorter than the {self.min_frames} frames {self.extractor_name} needs"
            )
        self.num_frames = num_frames

    def train(self, mode: bool = True) -> _VideoFeatureMetric:
        """Switching the metric to train mode never unfreezes the extractor's BatchNorm statistics."""
        super().train(mode)
        self.extractor.eval()
        return self

    def partial_signature(self) -> dict[str, Any]:
        return {
            **super().partial_signature(),
            "extractor": self.extractor_name,
            "num_frames": self.num_frames,
            "feature_dim": int(self.feature_dim),
            "flavour": self.flavour.record(),
        }

    def settings_record(self) -> dict[str, Any]:
        """What metrics.json records about how this number was computed."""
        return {"flavour": self.flavour.record(), "extractor": self.extractor_name, "num_frames": self.num_frames}

    def _quantised(self, videos: Tensor) -> Tensor:
        """Float frames rounded to uint8 the flavour's way (floor or round); uint8 input passes unchanged."""
        if self.flavour.quantise == "none" or videos.dtype == torch.uint8:
            return videos
        unit = video_to_unit_float(videos)  # float32, as both codebases compute it
        if self.flavour.quantise == "round":  # StyleGAN-V's expression for its [-1, 1] generator output
            return ((unit * 2 - 1) * 127.5 + 128).clamp(0, 255).to(torch.uint8)
        return (unit * 255).to(torch.uint8)  # VideoGPT: (videos * 255).numpy().astype(np.uint8)

    def extract_features(self, videos: Tensor) -> Tensor:
        """Validate, select the clip and return `(B, D)` float64 features."""
        clips = video_to_unit_float(self._quantised(videos))
        t = clips.shape[1]
        if self.num_frames is not None:
            if t < self.num_frames:
                raise ValueError(
                    f"videos have {t} frames but num_frames={self.num_frames}; drop short videos (StyleGAN-V "
                    f"discards them) or lower num_frames."
                )
            clips = clips[:, : self.num_frames]
        elif t < self.min_frames:
            raise ValueError(
                f"videos have {t} frames, fewer than the {self.min_frames} {self.extractor_name} needs"
            )
        with torch.no_grad():
            feats = self.extractor(clips)
        if feats.ndim != 2 or feats.shape != (clips.shape[0], self.feature_dim):
            raise ValueError(
                f"extractor {self.extractor_name} returned shape {tuple(feats.shape)}, expected "
                f"({clips.shape[0]}, {self.feature_dim})"
            )
        return feats.to(torch.float64)


class FrechetVideoDistance(_VideoFeatureMetric):
    """FVD = ‖μ_r − μ_g‖² + tr(Σ_r + Σ_g − 2(Σ_rΣ_g)^½) over extractor features, kept as float64 sums.

    The covariance is the flavour's: ÷(N−1) (TF-GAN, VideoGPT) or ÷N (StyleGAN-V's FeatureStats).
    """

    def __init__(self, extractor: str | nn.Module = "i3d", **settings: Any) -> None:
        """`settings`: the shared ones (weights_path, weights_config_key, num_frames, feature_dim, flavour; see
        `_VideoFeatureMetric`) and torchmetrics' Metric keywords."""
        super().__init__(extractor, **settings)
        self.covariance = self.flavour.covariance
        d = int(self.feature_dim)
        for side in ("real", "fake"):
            self.add_mergeable_state(f"{side}_sum", torch.zeros(d, dtype=torch.float64), "sum")
            self.add_mergeable_state(f"{side}_outer_sum", torch.zeros(d, d, dtype=torch.float64), "sum")
            self.add_mergeable_state(f"{side}_count", torch.zeros((), dtype=torch.float64), "sum")

    def update(self, videos: Tensor, real: bool) -> None:
        """Add a batch of real (`real=True`) or generated videos."""
        feats = self.extract_features(videos)
        side = "real" if real else "fake"
        setattr(self, f"{side}_sum", getattr(self, f"{side}_sum") + feats.sum(dim=0))
        setattr(self, f"{side}_outer_sum", getattr(self, f"{side}_outer_sum") + feats.T @ feats)
        setattr(self, f"{side}_count", getattr(self, f"{side}_count") + feats.shape[0])

    def _mean_cov(self, side: str) -> tuple[Tensor, Tensor]:
        n = getattr(self, f"{side}_count")
        if n < 2:
            raise RuntimeError(
                f"FVD needs at least 2 {side} videos, got {int(n)}; call update(..., real=...) more"
            )
        mean = getattr(self, f"{side}_sum") / n
        scatter = getattr(self, f"{side}_outer_sum") - n * torch.outer(mean, mean)
        return mean, scatter / (n - 1 if self.covariance == "unbiased" else n)

    def compute(self) -> Tensor:
        mu_r, sigma_r = self._mean_cov("real")
        mu_g, sigma_g = self._mean_cov("fake")
        return torch.tensor(frechet_distance(mu_r, sigma_r, mu_g, sigma_g), dtype=torch.float64)


class KernelVideoDistance(_VideoFeatureMetric):
    """KVD: unbiased polynomial-kernel MMD² of extractor features (KID on I3D features).

    Kernel (xᵀy/D + 1)³. The estimator and scale are the flavour's: KID's 100 subsets of up to 1000 videos
    reported x1000 (stylegan_v), TF-GAN's contiguous blocks of up to 1024 (tf_hub), or one estimate on the
    full sets (TATS; videogpt). `subsets` / `subset_size` override the flavour's (None = full sets or the
    flavour's blocks). compute() returns (mean, std) over subsets or blocks.
    """

    def __init__(
        self,
        extractor: str | nn.Module = "i3d",
        *,
        subsets: int | None | Literal["flavour"] = "flavour",
        subset_size: int | Literal["flavour"] = "flavour",
        degree: int = 3,
        gamma: float | None = None,
        coef: float = 1.0,
        seed: int = 0,
        **settings: Any,
    ) -> None:
        """`settings`: the shared ones (weights_path, weights_config_key, num_frames, feature_dim, flavour; see
        `_VideoFeatureMetric`) and torchmetrics' Metric keywords."""
        super().__init__(extractor, **settings)
        self.subsets = self.flavour.kvd_subsets if subsets == "flavour" else subsets
        self.subset_size = self.flavour.kvd_subset_size if subset_size == "flavour" else int(subset_size)
        self.block_size = self.flavour.kvd_block_size if self.subsets is None else None
        self.scale = self.flavour.kvd_scale
        self.degree, self.gamma, self.coef, self.seed = degree, gamma, coef, seed
        self.add_mergeable_state("real_features", [], "cat")
        self.add_mergeable_state("fake_features", [], "cat")

    def update(self, videos: Tensor, real: bool) -> None:
        """Add a batch of real (`real=True`) or generated videos."""
        (self.real_features if real else self.fake_features).append(self.extract_features(videos))

    @staticmethod
    def _gather(state: list[Tensor] | Tensor) -> Tensor:
        return torch.cat(state, dim=0) if isinstance(state, list) else state

    def compute(self) -> tuple[Tensor, Tensor]:
        if len(self.real_features) == 0 or len(self.fake_features) == 0:
            raise RuntimeError(
                "KVD needs both real and generated videos; call update(..., real=...) for both"
            )
        values = polynomial_mmd_per_subset(
            self._gather(self.real_features),
            self._gather(self.fake_features),
            degree=self.degree,
            gamma=self.gamma,
            coef=self.coef,
            subsets=self.subsets,
            subset_size=self.subset_size,
            seed=self.seed,
            block_size=self.block_size,
        )
        values = values * self.scale
        std = values.std(unbiased=False) if values.numel() > 1 else torch.zeros((), dtype=values.dtype)
        return values.mean(), std

    def settings_record(self) -> dict[str, Any]:
        return {
            **super().settings_record(),
            "subsets": self.subsets,
            "subset_size": self.subset_size if self.subsets is not None else None,
            "block_size": self.block_size,
            "scale": self.scale,
            "seed": self.seed,
        }
