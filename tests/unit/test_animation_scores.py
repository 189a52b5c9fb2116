"""Per-video PSNR/SSIM and the silhouette IoU used by the Animate Anyone held-out proof."""

import numpy as np
import torch
from skimage.metrics import structural_similarity

from src.eval.animation_scores import foreground_mask, silhouette_iou, video_psnr, video_ssim


def test_psnr_and_ssim_against_independent_computations():
    g = torch.Generator().manual_seed(0)
    a = torch.rand(2, 3, 4, 32, 32, generator=g) * 2 - 1
    b = (a + 0.1 * torch.randn(a.shape, generator=g)).clamp(-1, 1)
    x, y = (a + 1) / 2, (b + 1) / 2
    mse = ((x - y) ** 2).mean(dim=(1, 3, 4))  # per video and frame
    torch.testing.assert_close(video_psnr(a, b), (10 * torch.log10(1 / mse)).mean(1), rtol=1e-4, atol=1e-4)
    ref = [
        np.mean([
            structural_similarity(x[i, :, f].permute(1, 2, 0).double().numpy(), y[i, :, f].permute(1, 2, 0).double().numpy(),
                                  channel_axis=2, data_range=1.0, gaussian_weights=True, sigma=1.5, use_sample_covariance=False)
            for f in range(4)
        ])
        for i in range(2)
    ]
    torch.testing.assert_close(video_ssim(a, b).double(), torch.tensor(ref), atol=2e-3, rtol=0)


def test_silhouette_iou_of_the_foreground():
    background = torch.full((1, 3, 16, 16), -0.5)
    video = background[:, :, None].repeat(1, 1, 2, 1, 1)
    video[:, :, 0, 4:8, 4:8] = 0.8   # frame 0: a 4x4 character
    video[:, :, 1, 4:8, 4:12] = 0.8  # frame 1: 4x8
    true = torch.zeros(1, 2, 16, 16, dtype=torch.bool)
    true[:, :, 4:8, 4:8] = True
    mask = foreground_mask(video, background, smooth=1)
    assert torch.equal(mask[0, 0], true[0, 0])
    torch.testing.assert_close(silhouette_iou(mask, true), torch.tensor([(1.0 + 0.5) / 2]))
    # isolated grain is not foreground once smoothed
    grainy = video.clone()
    grainy[:, :, :, 12, 1] = 0.9
    assert foreground_mask(grainy, background, smooth=1)[0, 0, 12, 1]
    assert not foreground_mask(grainy, background, smooth=3)[0, 0, 12, 1]
