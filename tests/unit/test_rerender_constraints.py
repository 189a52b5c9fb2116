"""Rerender key-frame constraint blocks: step windows at the official indices, AdaIN statistics."""

import pytest
import torch

from src.rerender.adain import adain, channel_stats
from src.rerender.step_windows import StepWindows


def test_default_windows_fire_at_the_official_indices_for_20_steps():
    windows = StepWindows()
    assert windows.steps("cross_attention", 20) == list(range(20))
    assert windows.steps("shape_fusion", 20) == [0, 1, 2]
    assert windows.steps("pixel_fusion", 20) == [11, 12, 13, 14, 15]
    assert windows.steps("adain", 20) == [16, 17, 18, 19]
    assert StepWindows(adain=(1.0, 1.0)).steps("adain", 20) == []  # the official default: never
    with pytest.raises(ValueError, match="unknown constraint"):
        windows.active("freeu", 0, 20)
    with pytest.raises(ValueError, match="0 <= start <= end <= 1"):
        StepWindows(shape_fusion=(0.5, 0.2))


def test_adain_gives_the_reference_channel_statistics():
    torch.manual_seed(0)
    x, ref = torch.randn(2, 4, 8, 8) * 3 + 1, torch.randn(2, 4, 8, 8) * 0.5 - 2
    ref_mean, ref_std = channel_stats(ref)
    mean, std = channel_stats(adain(x, ref_mean, ref_std))
    assert torch.allclose(mean, ref_mean, atol=1e-5) and torch.allclose(std, ref_std, atol=1e-4)
    assert not torch.allclose(channel_stats(x)[0], ref_mean, atol=0.1)


def test_shape_fusion_with_zero_flow_and_no_occlusion_returns_the_anchor_x0():
    from src.rerender.shape_fusion import latent_flow_and_mask, shape_aware_fusion

    torch.manual_seed(3)
    x0, anchor = torch.randn(1, 4, 6, 8), torch.randn(1, 4, 6, 8)
    flow, occlusion = torch.zeros(1, 2, 48, 64), torch.zeros(1, 1, 48, 64)
    latent_flow, mask = latent_flow_and_mask(flow, occlusion)
    assert latent_flow.shape == (1, 2, 6, 8) and torch.equal(mask, torch.ones(1, 1, 6, 8))
    assert torch.allclose(shape_aware_fusion(x0, anchor, latent_flow, mask), anchor)
    occlusion[..., 20, 30] = 1.0  # one occluded pixel invalidates its latent cell (and, softened, its neighbours)
    _, mask = latent_flow_and_mask(flow, occlusion)
    fused = shape_aware_fusion(x0, anchor, latent_flow, mask)
    assert mask[0, 0, 2, 3] == 0 and torch.allclose(fused[..., 2, 3], x0[..., 2, 3])
    assert mask[0, 0, 5, 0] == 1 and torch.allclose(fused[..., 5, 0], anchor[..., 5, 0])
    shifted = torch.zeros(1, 2, 48, 64)
    shifted[:, 0] = 8.0  # one latent cell to the right
    latent_flow, mask = latent_flow_and_mask(shifted, torch.zeros(1, 1, 48, 64))
    assert torch.allclose(shape_aware_fusion(x0, anchor, latent_flow, mask)[..., :7], anchor[..., 1:])
