"""Each FVD flavour against outputs of its own codebase, run on shared random weights (tests/data/fvd_flavours/).

- tf_hub: I3D features equal those of the TF-Hub i3d-kinetics-400/1 graph itself (its saved_model.pb run in
  TensorFlow with our random weights, after the google-research script's resize_bilinear preprocessing);
  FVD and KVD equal TF-GAN's on shared feature sets.
- videogpt: features equal VideoGPT's FVD code (pytorch_i3d + its preprocess) bit for bit; FVD equals its
  float32 frechet_distance.
- stylegan_v: FVD and KVD equal StyleGAN-V's compute_fvd / compute_kid on shared feature sets; its
  TorchScript call (uint8 `b c t h w`, rescale=True, resize=True) is checked with a scripted stand-in, since
  i3d_torchscript.pt itself is not obtainable offline.
- common_metrics: its preprocessing and frechet_distance equal common_metrics_on_video_quality's (styleganv
  method); its TorchScript call (float [-1, 1], rescale=False, resize=False) is checked with a stand-in.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from src.eval.distances import polynomial_mmd_per_subset
from src.eval.fvd import FrechetVideoDistance, KernelVideoDistance
from src.eval.fvd_flavours import FLAVOURS, get_flavour
from src.eval.i3d import load_i3d_extractor, preprocess_for_i3d
from tests.unit.evaluate_helpers import one_thread
from tests.unit.fvd_reference import (
    REFERENCE_DIR,
    shared_random_features,
    shared_random_i3d_state,
    shared_random_videos,
)

FORMULAS = json.loads((REFERENCE_DIR / "formulas.json").read_text())
pytestmark = pytest.mark.usefixtures("one_thread")  # MKL's threaded eigh spins on a loaded 2-core box
__all__ = ["one_thread"]


@pytest.fixture(scope="module")
def i3d_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("fvd_flavours") / "i3d_pretrained_400.pt"
    torch.save(shared_random_i3d_state(), path)
    return path


@pytest.fixture(scope="module")
def videos():
    clips = shared_random_videos()
    assert float(clips.double().sum()) == pytest.approx(FORMULAS["videos_sum"], rel=1e-9)  # same inputs as the refs
    return clips


@pytest.mark.parametrize("flavour", ["tf_hub", "videogpt"])
def test_i3d_features_equal_the_reference_codebase(flavour, i3d_file, videos):
    expected = np.load(REFERENCE_DIR / "i3d_features.npz")[flavour][:2]  # per-video features: 2 of 4 suffice
    metric = FrechetVideoDistance("i3d", weights_path=i3d_file, num_frames=None, flavour=flavour)
    got = metric.extract_features(videos[:2]).numpy()
    # measured: 7e-6 against TensorFlow (max |logit| 6.7), 0 against VideoGPT's PyTorch code
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-4)
    other = np.load(REFERENCE_DIR / "i3d_features.npz")["videogpt" if flavour == "tf_hub" else "tf_hub"][:2]
    assert np.abs(got - other).max() > 0.05  # the flavours differ by far more than the tolerance


class FeatureLookup(nn.Module):
    """Extractor returning row i of a fixed feature table for the 1-frame uint8 video that encodes i."""

    min_frames = 1

    def __init__(self, features: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("features", features)
        self.num_features = features.shape[1]

    def forward(self, videos: torch.Tensor) -> torch.Tensor:
        digits = (videos[:, 0, 0, 0, :2] * 255).round().long()
        return self.features[digits[:, 0] * 256 + digits[:, 1]]


def _index_videos(n: int) -> torch.Tensor:
    index = torch.arange(n)
    pixels = torch.stack([index // 256, index % 256], dim=1).to(torch.uint8)
    return pixels[:, None, None, None, :].expand(n, 1, 3, 1, 2).contiguous()


def _score(metric_cls, flavour: str, n: int):
    """The metric on the first n of the shared 500 real and 500 generated feature rows, fed as videos."""
    real, fake = shared_random_features(10, 500)[:n], shared_random_features(11, 500, shift=0.3)[:n]
    metric = metric_cls(FeatureLookup(torch.cat([real, fake])), num_frames=1, flavour=flavour)
    videos = _index_videos(2 * n)
    for chunk in videos[:n].split(64):
        metric.update(chunk, real=True)
    for chunk in videos[n:].split(50):
        metric.update(chunk, real=False)
    return metric.compute()


@pytest.mark.parametrize(
    "flavour,expected,rel",
    [
        ("tf_hub", FORMULAS["tf_hub"]["fvd"], 1e-8),  # TF-GAN frechet_classifier_distance_from_activations
        ("stylegan_v", FORMULAS["stylegan_v"]["fvd"], 1e-8),  # StyleGAN-V compute_fvd (cov / N, scipy sqrtm)
        ("videogpt", FORMULAS["videogpt"]["fvd_float32"], 1e-5),  # VideoGPT frechet_distance runs in float32
        ("common_metrics", FORMULAS["common_metrics"]["fvd"], 1e-8),  # np.cov + scipy sqrtm
    ],
)
def test_fvd_formula_equals_the_reference_codebase(flavour, expected, rel):
    assert float(_score(FrechetVideoDistance, flavour, 500)) == pytest.approx(expected, rel=rel)


@pytest.mark.parametrize(
    "flavour,expected,rel",
    [
        ("tf_hub", FORMULAS["tf_hub"]["kvd"], 1e-9),  # TF-GAN kernel_classifier_distance (one block at N <= 1024)
        # compute_kid: subsets of min(N, 1000) (here the full sets), x1000; its FeatureStats keeps float32
        ("stylegan_v", FORMULAS["stylegan_v"]["kvd_x1000"], 1e-6),
        ("videogpt", FORMULAS["tf_hub"]["kvd"], 1e-9),  # TATS' full-set estimator = TF-GAN's single block
    ],
)
def test_kvd_estimator_and_scale_equal_the_reference_codebase(flavour, expected, rel):
    mean, _ = _score(KernelVideoDistance, flavour, 100)  # the references ran KVD on 100 vs 100
    assert float(mean) == pytest.approx(expected, rel=rel)


def test_tf_hub_kvd_splits_large_sets_into_tfgan_blocks():
    real, fake = shared_random_features(10, 500)[:100], shared_random_features(11, 500, shift=0.3)[:90]
    blocks = polynomial_mmd_per_subset(real, fake, block_size=32)  # 4 blocks: 25 real, 22 or 23 generated rows
    assert blocks.shape == (4,)
    # TF-GAN kernel_classifier_distance_and_std_from_activations(real, fake, max_block_size=32)
    assert float(blocks.mean()) == pytest.approx(FORMULAS["tf_hub"]["kvd_blocks32_100v90"], rel=1e-9)
    assert float(polynomial_mmd_per_subset(real, fake).mean()) != pytest.approx(float(blocks.mean()), rel=1e-3)
    assert get_flavour("tf_hub").kvd_block_size == 1024  # so 2048 vs 2048 videos are two blocks, as TF-GAN


class StyleGANVCallCheck(nn.Module):
    """Scripted stand-in for i3d_torchscript.pt that accepts only StyleGAN-V's call: uint8 `b c t h w`, rescale
    and resize inside the network; returns the per-channel pixel sums (exact in float32) padded to 400."""

    def forward(
        self, x: torch.Tensor, rescale: bool = False, resize: bool = False, return_features: bool = False
    ) -> torch.Tensor:
        if x.dtype != torch.uint8 or x.shape[1] != 3 or not (rescale and resize and return_features):
            raise RuntimeError("StyleGAN-V calls the detector on uint8 [B, 3, T, H, W] with rescale/resize=True")
        sums = x.float().sum(dim=(2, 3, 4))
        return torch.cat([sums, sums.new_zeros(sums.shape[0], 397)], dim=1)


@pytest.mark.filterwarnings("ignore:`torch.jit")
def test_stylegan_v_hands_rounded_uint8_clips_to_the_torchscript(tmp_path, videos):
    stand_in = StyleGANVCallCheck()
    path = tmp_path / "i3d_torchscript.pt"
    torch.jit.save(torch.jit.script(stand_in), str(path))
    metric = FrechetVideoDistance("i3d", weights_path=path, num_frames=None, flavour="stylegan_v")
    # StyleGAN-V: (img * 127.5 + 128).clamp(0, 255).to(uint8) for img in [-1, 1], i.e. floor(255 x + 0.5)
    expected_uint8 = ((videos.float() * 2 - 1) * 127.5 + 128).clamp(0, 255).to(torch.uint8)  # float32 there
    expected = stand_in(expected_uint8.transpose(1, 2), rescale=True, resize=True, return_features=True)
    torch.testing.assert_close(metric.extract_features(videos).float(), expected, rtol=0, atol=0)
    floored = stand_in(torch.floor(videos.double() * 255).to(torch.uint8).transpose(1, 2), True, True, True)
    assert not torch.equal(floored, expected)  # rounding vs flooring is visible in these sums


class CommonMetricsCallCheck(nn.Module):
    """Stand-in for i3d_torchscript.pt that accepts only common_metrics' call: float clips already in [-1, 1],
    rescale=False, resize=False; returns the per-channel sums of what it was given, padded to 400."""

    def forward(
        self, x: torch.Tensor, rescale: bool = True, resize: bool = True, return_features: bool = False
    ) -> torch.Tensor:
        if not x.is_floating_point() or x.shape[-2:] != (224, 224) or rescale or resize or not return_features:
            raise RuntimeError("common_metrics calls the detector on [-1, 1] 224x224 clips with rescale/resize=False")
        sums = x.double().sum(dim=(2, 3, 4)).float()
        return torch.cat([sums, sums.new_zeros(sums.shape[0], 397)], dim=1)


@pytest.mark.filterwarnings("ignore:`torch.jit")
def test_common_metrics_preprocesses_as_that_repository_and_calls_the_torchscript_raw(tmp_path, videos):
    path = tmp_path / "i3d_torchscript.pt"
    torch.jit.save(torch.jit.script(CommonMetricsCallCheck()), str(path))
    metric = FrechetVideoDistance("i3d", weights_path=path, num_frames=None, flavour="common_metrics")
    sums = metric.extract_features(videos)[:, :3].numpy()
    np.testing.assert_allclose(sums, FORMULAS["common_metrics"]["preprocessed_channel_sums"], rtol=1e-5)
    sample = np.load(REFERENCE_DIR / "i3d_features.npz")["common_metrics_preprocessed_video0_every16th"]
    ours = preprocess_for_i3d(videos[:1], "short_side_center_crop")[0, :, :, ::16, ::16].numpy()
    np.testing.assert_allclose(ours, sample, rtol=0, atol=1e-6)
    squashed = preprocess_for_i3d(videos[:1], "squash_tf1_bilinear")[0, :, :, ::16, ::16].numpy()
    assert np.abs(squashed - sample).max() > 0.05  # the tf_hub rule would not pass


def test_flavours_refuse_the_other_file_format(i3d_file, tmp_path):
    with pytest.raises(ValueError, match=r"stylegan_v.*i3d_torchscript\.pt.*tf_hub accepts both"):
        load_i3d_extractor(i3d_file, flavour="stylegan_v")
    script = tmp_path / "i3d_torchscript.pt"
    torch.jit.save(torch.jit.script(StyleGANVCallCheck()), str(script))
    with pytest.raises(ValueError, match=r"videogpt.*i3d_pretrained_400\.pt"):
        load_i3d_extractor(script, flavour="videogpt")
    with pytest.raises(ValueError, match=r"unknown FVD flavour 'tats'.*stylegan_v"):
        FrechetVideoDistance(FeatureLookup(torch.zeros(2, 4)), num_frames=1, flavour="tats")


def test_flavour_settings_are_recorded_and_part_of_the_merge_signature():
    table = torch.zeros(2, 4)
    fvd = FrechetVideoDistance(FeatureLookup(table), num_frames=1, flavour="videogpt")
    kvd = KernelVideoDistance(FeatureLookup(table), num_frames=1, flavour="stylegan_v")
    assert fvd.settings_record()["flavour"] == FLAVOURS["videogpt"].record()
    assert fvd.settings_record()["flavour"]["bn_eps"] == 1e-5
    assert kvd.settings_record() | {"flavour": None} == {
        "flavour": None, "extractor": "FeatureLookup", "num_frames": 1,
        "subsets": 100, "subset_size": 1000, "block_size": None, "scale": 1000.0, "seed": 0,
    }
    other = FrechetVideoDistance(FeatureLookup(table), num_frames=1, flavour="tf_hub")
    assert fvd.partial_signature() != other.partial_signature()
    assert get_flavour("tf_hub").resize == "squash_tf1_bilinear"
