"""Sampling outputs pinned before both systems moved onto the shared denoising loop (src.models.sampling).

The numbers were produced by the previous samplers (Animate Anyone through diffusers' DDIMScheduler, DynamiCrafter
through its hand-written DDIM) on the tiny seeded models of `sampling_models`; the shared loop must reproduce
them: sum, absolute sum and eight evenly spaced values of the decoded video.
"""

from __future__ import annotations

import pytest
import torch

from tests.unit.sampling_models import (
    DC_FRAMES,
    aa_inputs,
    dc_inputs,
    tiny_animate_anyone,
    tiny_dynamicrafter,
)

AA_PINS = [
    (
        dict(num_steps=3, guidance_scale=2.0, eta=0.0),
        [109.517343, 1206.554176, 0.120344, 0.539273, 0.545069, 0.052964, 0.395151, 1.0, 0.474927, 0.030056],
    ),
    (
        dict(num_steps=4, guidance_scale=1.0, eta=0.0),
        [126.08989, 1092.7871, 0.091359, 0.486845, 0.355018, -0.100132, 0.214419, 0.842144, 0.357347, 0.040165],
    ),
]
DC_PINS = [
    (
        dict(num_steps=3, guidance_scale=3.0, image_guidance_scale=1.5, guidance_rescale=0.7, eta=1.0),
        [49.113597, 1286.234693, 0.334927, 0.334531, -0.310711, 1.0, -0.505889, -1.0, -0.210291, -0.080679],
    ),
    (
        dict(num_steps=3, guidance_scale=2.0, eta=0.0),
        [-47.083508, 1457.557615, -0.047769, -0.916474, 0.351037, -0.740465, 0.228175, -1.0, -0.49124, -0.603648],
    ),
]


def summary(video: torch.Tensor) -> torch.Tensor:
    flat = video.flatten().double()
    picks = flat[torch.linspace(0, flat.numel() - 1, 8).long()]
    return torch.cat([torch.stack([flat.sum(), flat.abs().sum()]), picks])


@pytest.fixture(scope="module")
def animate_anyone():
    return tiny_animate_anyone()


@pytest.fixture(scope="module")
def dynamicrafter():
    return tiny_dynamicrafter()


@pytest.mark.parametrize("settings, pinned", AA_PINS)
def test_animate_anyone_sampling_is_unchanged(animate_anyone, settings, pinned):
    reference, pose = aa_inputs(6)
    video = animate_anyone.animate(reference, pose, generator=torch.Generator().manual_seed(3), **settings)
    assert video.shape == (1, 3, 6, 16, 16)
    got = summary(video)
    torch.testing.assert_close(got[:2], torch.tensor(pinned[:2], dtype=torch.float64), rtol=1e-5, atol=2e-3)
    torch.testing.assert_close(got[2:], torch.tensor(pinned[2:], dtype=torch.float64), rtol=0, atol=1e-5)


@pytest.mark.parametrize("settings, pinned", DC_PINS)
def test_dynamicrafter_sampling_is_unchanged(dynamicrafter, settings, pinned):
    image, captions = dc_inputs()
    video = dynamicrafter.sample(
        image, captions, num_frames=DC_FRAMES, generator=torch.Generator().manual_seed(3), **settings
    )
    assert video.shape == (1, 3, DC_FRAMES, 16, 16)
    got = summary(video)
    torch.testing.assert_close(got[:2], torch.tensor(pinned[:2], dtype=torch.float64), rtol=1e-5, atol=2e-3)
    torch.testing.assert_close(got[2:], torch.tensor(pinned[2:], dtype=torch.float64), rtol=0, atol=1e-5)
