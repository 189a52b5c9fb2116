"""The fidelity-oriented encoder E* on a tiny AutoencoderKL trained for a few seconds on demo frames: repeated
encode/decode round trips drift away from the image with the plain encoder and much less with E*; where its
correction fails (threshold 0) E* falls back to the plain encoding."""

from __future__ import annotations

import torch
from diffusers import AutoencoderKL

from src.rerender.demo import demo_video
from src.rerender.fidelity_encoder import decode, encode, fidelity_encode


def trained_tiny_vae(images: torch.Tensor, steps: int = 150) -> AutoencoderKL:
    torch.manual_seed(0)
    vae = AutoencoderKL(
        block_out_channels=(8, 8),
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        latent_channels=4,
        norm_num_groups=4,
        layers_per_block=1,
        sample_size=32,
    )
    optimizer = torch.optim.Adam(vae.parameters(), lr=3e-3)
    x = images * 2 - 1
    for _ in range(steps):
        loss = (vae(x).sample - x).abs().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return vae.eval()


def round_trips(vae, image, encoder, n=5):
    errors, x = [], image
    for _ in range(n):
        x = decode(vae, encoder(vae, x))
        errors.append(float((x - image).abs().mean()))
    return errors


def test_fidelity_encoder_reduces_the_error_of_five_round_trips():
    frames, _ = demo_video(3, 4, 32, 32)
    images = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255
    vae = trained_tiny_vae(images)
    image = images[:2]
    plain = round_trips(vae, image, encode)
    ours = round_trips(vae, image, fidelity_encode)
    assert plain[-1] > plain[0] * 1.2, plain  # the plain encoder drifts with every round trip
    # The drift over the trips, relative to the plain encoder's: measured 0.22 on torch 2.14 and 0.24 on 2.11 (the
    # tiny VAE trains a little differently per torch build; ours alone grew 1.13x and 1.22x), final error 0.72x/0.63x.
    growth = (ours[-1] / ours[0] - 1) / (plain[-1] / plain[0] - 1)
    assert ours[-1] < 0.85 * plain[-1] and growth < 1 / 3, (ours, plain, growth)
    always_failed = fidelity_encode(vae, image, threshold=0.0)  # every pixel "fails": no correction anywhere
    torch.testing.assert_close(always_failed, encode(vae, image))
