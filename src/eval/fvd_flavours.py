"""FVD/KVD flavours: the published FVD codebases, each pinned down by every setting in which they differ.

Papers' FVDs differ through exactly these choices (BatchNorm eps, how frames reach 224x224, whether float
frames are quantised to uint8 first, the covariance normalisation, the KVD estimator and its scale), so a
protocol names one flavour (`conf/eval/*.yaml: fvd_flavour`), the FVD/KVD metrics take it as `flavour=` and
metrics.json records its settings. Each flavour is tested against outputs of its codebase run on shared
random weights (tests/unit/test_eval_fvd_flavours.py, tests/data/fvd_flavours/README.md).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

# squash_tf1_bilinear: every frame straight to 224x224 with TF1 resize_bilinear (no crop);
# short_side_center_crop: short side to 224 (PyTorch bilinear, long side ceil'ed), then a centre crop;
# torchscript_internal: uint8 frames go to StyleGAN-V's TorchScript, which resizes and rescales itself.
ResizeRule = Literal["squash_tf1_bilinear", "short_side_center_crop", "torchscript_internal"]
# Float frames in [0, 1] before the network: kept as they are, floored to uint8 (VideoGPT: x*255 cast), or
# rounded (StyleGAN-V: `(img * 127.5 + 128).clamp(0, 255).to(uint8)` on img = 2x - 1, in float32).
Quantise = Literal["none", "floor", "round"]


@dataclass(frozen=True)
class FVDFlavour:
    """The settings one FVD codebase uses; `network` says which I3D file format it runs."""

    name: str
    reference: str
    network: Literal["state_dict", "torchscript", "any"]
    bn_eps: float | None  # None: fixed inside the TorchScript file (TF-Hub's 1e-3)
    resize: ResizeRule
    quantise: Quantise
    covariance: Literal["unbiased", "biased"]
    kvd_subsets: int | None  # None: one estimate on the full sets, or TF-GAN's blocks if kvd_block_size is set
    kvd_subset_size: int
    kvd_block_size: int | None  # TF-GAN's max_block_size: contiguous blocks, one estimate each
    kvd_scale: float  # reported KVD = scale * MMD²

    def record(self) -> dict[str, Any]:
        """Plain dict for metrics.json and partial-state signatures."""
        return dataclasses.asdict(self)


# What most codebases do; each flavour below states only where it departs from this: a PyTorch I3D state dict
# (BatchNorm eps 1e-5), short side to 224 + centre crop, float frames as they are, the unbiased covariance,
# KVD as one estimate on the full sets, unscaled.
BASE = FVDFlavour(
    name="base",
    reference="",
    network="state_dict",
    bn_eps=1e-5,
    resize="short_side_center_crop",
    quantise="none",
    covariance="unbiased",
    kvd_subsets=None,
    kvd_subset_size=1000,
    kvd_block_size=None,
    kvd_scale=1.0,
)


def _flavour(name: str, reference: str, **differences: Any) -> FVDFlavour:
    return dataclasses.replace(BASE, name=name, reference=reference, **differences)


FLAVOURS: dict[str, FVDFlavour] = {
    "tf_hub": _flavour(
        "tf_hub",
        "google-research/google-research frechet_video_distance (TF-Hub deepmind/i3d-kinetics-400/1 graph, "
        "TF-GAN frechet_classifier_distance); KVD as TF-GAN's kernel_classifier_distance (blocks of up to "
        "1024; the script itself defines no KVD)",
        network="any",
        bn_eps=1e-3,
        resize="squash_tf1_bilinear",
        kvd_block_size=1024,
    ),
    "stylegan_v": _flavour(
        "stylegan_v",
        "universome/stylegan-v src/metrics (i3d_torchscript.pt called on uint8 with rescale=True, "
        "resize=True; FeatureStats covariance / N; scipy sqrtm); KVD with its KID estimator "
        "(100 subsets of min(N, 1000), reported x1000)",
        network="torchscript",
        bn_eps=None,
        resize="torchscript_internal",
        quantise="round",
        covariance="biased",
        kvd_subsets=100,
        kvd_scale=1000.0,
    ),
    "common_metrics": _flavour(
        "common_metrics",
        "JunyaoHu/common_metrics_on_video_quality calculate_fvd(method='styleganv'), its default: "
        "i3d_torchscript.pt called with rescale=False, resize=False on its own preprocessing (float frames, "
        "short side to 224 + centre crop, (x - 0.5) * 2); np.cov (N - 1) and scipy sqrtm; no KVD "
        "(full-set estimate here)",
        network="torchscript",
        bn_eps=None,
    ),
    "videogpt": _flavour(
        "videogpt",
        "wilson1yan/VideoGPT videogpt/fvd (= JunyaoHu/common_metrics_on_video_quality fvd/videogpt): "
        "pytorch_i3d InceptionI3d (BatchNorm eps 1e-5) on i3d_pretrained_400.pt, float frames floored to "
        "uint8, short side to 224 + centre crop; KVD as TATS' polynomial MMD on the full sets",
        quantise="floor",
    ),
}


def get_flavour(name: str) -> FVDFlavour:
    """The flavour called `name`; an unknown name is an error listing the known ones."""
    if name not in FLAVOURS:
        raise ValueError(
            f"unknown FVD flavour {name!r}; expected one of {sorted(FLAVOURS)} (set eval.fvd_flavour or the "
            f"metric's flavour=)"
        )
    return FLAVOURS[name]
