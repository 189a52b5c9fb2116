"""Pose Guider: layout equals diffusers' ControlNet conditioning embedding; zero output at init; input checks."""

from __future__ import annotations

import pytest
import torch
from diffusers.models.controlnets.controlnet import ControlNetConditioningEmbedding

from src.models.pose_guider import GAUSSIAN_STD, PoseGuider


def test_default_guider_is_controlnet_conditioning_embedding() -> None:
    torch.manual_seed(0)
    guider = PoseGuider()
    reference = ControlNetConditioningEmbedding(320, 3, (16, 32, 96, 256))
    assert set(guider.state_dict()) == set(reference.state_dict())
    with torch.no_grad():
        for param in reference.parameters():
            param.normal_(std=0.2)
    guider.load_state_dict(reference.state_dict(), strict=True)
    pose = torch.rand(2, 3, 64, 48)
    out = guider(pose)
    assert out.shape == (2, 320, 8, 6) and guider.downsample_factor == 8
    torch.testing.assert_close(out, reference(pose), rtol=0, atol=1e-6)


def test_zero_output_at_init_for_both_variants() -> None:
    pose = torch.rand(1, 3, 32, 32)
    moore = PoseGuider()
    paper = PoseGuider(block_channels=(16, 32, 64, 128), out_channels=4, injection="latent", init="gaussian")
    assert moore(pose).abs().max() == 0 and paper(pose).abs().max() == 0
    assert paper(pose).shape == (1, 4, 4, 4)
    weights = torch.cat([conv.weight.flatten() for conv in [paper.conv_in, *paper.blocks]])
    assert abs(weights.std().item() - GAUSSIAN_STD) < 0.002
    assert all(conv.bias.abs().max() == 0 for conv in [paper.conv_in, *paper.blocks])


def test_gradients_reach_the_last_conv_at_init() -> None:
    guider = PoseGuider(block_channels=(8, 16))
    guider(torch.rand(1, 3, 8, 8)).sum().backward()
    assert guider.conv_out.weight.grad.abs().max() > 0  # training can move it off zero


def test_zero_output_false_passes_pose_and_gradients_from_the_first_step() -> None:
    """From-scratch training: the output depends on the pose at init, and the inner convs get gradients."""
    torch.manual_seed(0)
    guider = PoseGuider(block_channels=(8, 16), out_channels=16, zero_output=False)
    pose_a, pose_b = torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 8)
    assert (guider(pose_a) - guider(pose_b)).abs().max() > 1e-3
    guider(pose_a).sum().backward()
    assert guider.conv_in.weight.grad.abs().max() > 0
    zero = PoseGuider(block_channels=(8, 16), out_channels=16)
    zero(pose_a).sum().backward()
    assert zero.conv_out.weight.grad.abs().max() > 0
    assert zero.conv_in.weight.grad.abs().max() == 0  # why zero_output slows a from-scratch guider


def test_input_checks() -> None:
    guider = PoseGuider(block_channels=(8, 16, 32))
    with pytest.raises(ValueError, match="divisible by 4"):
        guider(torch.rand(1, 3, 30, 32))
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        guider(torch.rand(1, 1, 32, 32))
    with pytest.raises(ValueError, match="injection"):
        PoseGuider(injection="after_unet")
    with pytest.raises(ValueError, match="init"):
        PoseGuider(init="xavier")
