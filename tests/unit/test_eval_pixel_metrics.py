"""VideoSSIM / VideoPSNR against independent implementations (skimage, numpy), both protocols."""

import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from src.eval.feature_stats import merge_partial_states, save_partial_state
from src.eval.pixel_metrics import VideoPSNR, VideoSSIM, opencv_bgr2gray, quantize_to_uint8_levels


def _pair(seed: int = 0, b: int = 2, t: int = 3, h: int = 24, w: int = 20):
    gen = torch.Generator().manual_seed(seed)
    target = torch.rand(b, t, 3, h, w, generator=gen)
    preds = (target + 0.1 * torch.randn(b, t, 3, h, w, generator=gen)).clamp(0, 1)
    return preds, target


def _frames_hwc(video: torch.Tensor) -> list[np.ndarray]:
    return [f.permute(1, 2, 0).double().numpy() for f in video.flatten(0, 1)]


def test_standard_ssim_matches_skimage_gaussian():
    preds, target = _pair()
    metric = VideoSSIM()
    metric.update(preds, target)
    expected = np.mean(
        [
            structural_similarity(
                p,
                t,
                gaussian_weights=True,
                sigma=1.5,
                use_sample_covariance=False,
                data_range=1.0,
                channel_axis=2,
            )
            for p, t in zip(_frames_hwc(preds), _frames_hwc(target))
        ]
    )
    # torchmetrics excludes the border (reflect-padded) pixels; skimage too: agreement to ~1e-3
    assert float(metric.compute()) == pytest.approx(expected, abs=2e-3)


def test_disco_ssim_matches_skimage_defaults_on_grayscale():
    preds, target = _pair(1)
    metric = VideoSSIM(protocol="disco")
    metric.update(preds, target)
    expected = []
    for p, t in zip(preds.flatten(0, 1), target.flatten(0, 1)):
        gray_p = opencv_bgr2gray(quantize_to_uint8_levels(p[None]))[0].numpy().astype(np.uint8)
        gray_t = opencv_bgr2gray(quantize_to_uint8_levels(t[None]))[0].numpy().astype(np.uint8)
        expected.append(structural_similarity(gray_p, gray_t))  # skimage defaults on uint8, as DisCo
    assert float(metric.compute()) == pytest.approx(float(np.mean(expected)), rel=1e-10)


def test_opencv_gray_conversion_is_the_bt601_weighting():
    rgb = torch.randint(0, 256, (4, 3, 9, 9)).double()
    gray = opencv_bgr2gray(rgb)
    float_formula = (0.299 * rgb[:, 0] + 0.587 * rgb[:, 1] + 0.114 * rgb[:, 2]).round()
    assert (gray - float_formula).abs().max() <= 1  # fixed-point rounding may differ by one level
    assert opencv_bgr2gray(torch.full((1, 3, 2, 2), 255.0)).eq(255).all()


@pytest.mark.parametrize("protocol", ["standard", "disco"])
def test_psnr_matches_skimage(protocol):
    preds, target = _pair(2)
    metric = VideoPSNR(protocol=protocol)
    metric.update((preds * 255).round().to(torch.uint8), (target * 255).round().to(torch.uint8))
    expected = np.mean(
        [
            peak_signal_noise_ratio(t, p, data_range=255)
            for p, t in zip(_frames_hwc((preds * 255).round()), _frames_hwc((target * 255).round()))
        ]
    )
    assert float(metric.compute()) == pytest.approx(expected, rel=1e-10)


def test_identical_and_opposite_frames():
    zeros, ones = torch.zeros(2, 3, 3, 16, 16), torch.ones(2, 3, 3, 16, 16)
    psnr = VideoPSNR()
    psnr.update(zeros, zeros)
    assert float(psnr.compute()) == 100.0
    psnr.reset()
    psnr.update(zeros, ones)
    assert float(psnr.compute()) == pytest.approx(0.0, abs=1e-12)  # published vector: PSNR 0 for 0 vs 1
    ssim = VideoSSIM()
    ssim.update(zeros, ones)
    assert float(ssim.compute()) == pytest.approx(1e-4 / (1 + 1e-4), rel=1e-6)  # C1 / (1 + C1)


def test_per_frame_average_and_merge(tmp_path):
    preds, target = _pair(3, b=4)
    single = VideoPSNR()
    single.update(preds, target)
    paths = []
    for i, (p, t) in enumerate(zip(preds.split([1, 3]), target.split([1, 3]))):
        part = VideoPSNR()
        part.update(p, t)
        paths.append(save_partial_state(part, tmp_path / f"{i}.pt"))
    merged = merge_partial_states(VideoPSNR(), paths)
    assert float(merged.compute()) == pytest.approx(float(single.compute()), rel=1e-12)
    # frame-weighted mean, not a mean of batch means
    per_frame = [
        peak_signal_noise_ratio(t, p, data_range=1.0) for p, t in zip(_frames_hwc(preds), _frames_hwc(target))
    ]
    assert float(single.compute()) == pytest.approx(float(np.mean(per_frame)), rel=1e-10)


def test_shape_mismatch_is_a_clear_error():
    with pytest.raises(ValueError, match="same shape"):
        VideoSSIM().update(torch.rand(1, 2, 3, 16, 16), torch.rand(1, 2, 3, 16, 18))
