"""Latent codecs: exact pixel-shuffle round trip; VAE codec scaling, slicing and strict folder loading."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from diffusers import AutoencoderKL

from src.models.codecs import PixelShuffleCodec, VAECodec


def test_pixel_shuffle_round_trip_is_exact() -> None:
    codec = PixelShuffleCodec(factor=4)
    images = torch.rand(3, 3, 16, 24) * 2 - 1
    latents = codec.encode(images)
    assert latents.shape == (3, 48, 4, 6) and codec.latent_channels == 48 and codec.downsample == 4
    assert torch.equal(codec.decode(latents), images)
    # a latent "pixel" holds exactly the factor x factor block of the image
    assert torch.equal(latents[0, :, 0, 0].view(3, 4, 4), images[0, :, :4, :4])
    with pytest.raises(ValueError, match="divisible"):
        codec.encode(torch.zeros(1, 3, 10, 16))
    with pytest.raises(ValueError, match="latents"):
        codec.decode(torch.zeros(1, 12, 4, 4))


@pytest.fixture
def vae_folder(tmp_path: Path) -> tuple[AutoencoderKL, Path]:
    torch.manual_seed(0)
    vae = AutoencoderKL(
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        block_out_channels=(8, 16),
        latent_channels=4,
        norm_num_groups=8,
        sample_size=16,
        scaling_factor=0.5,
    )
    vae.save_pretrained(tmp_path / "vae")
    return vae, tmp_path / "vae"


def test_vae_codec_scales_and_inverts_scaling(vae_folder) -> None:
    vae, folder = vae_folder
    codec = VAECodec(folder, sample_posterior=False)
    assert codec.latent_channels == 4 and codec.downsample == 2 and codec.scaling_factor == 0.5
    assert not any(p.requires_grad for p in codec.parameters())
    images = torch.rand(3, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        latents = codec.encode(images)
        torch.testing.assert_close(latents, vae.encode(images).latent_dist.mode() * 0.5)
        torch.testing.assert_close(codec.decode(latents), vae.decode(latents / 0.5).sample)
        sliced = VAECodec(folder, sample_posterior=False, slice_size=2, scaling_factor=2.0)
        torch.testing.assert_close(sliced.encode(images), latents * 4.0, rtol=1e-5, atol=1e-5)
        sampled = VAECodec(folder, sample_posterior=True).encode(images)
    assert sampled.shape == latents.shape and not torch.equal(sampled, latents)


def test_vae_codec_missing_folder_names_config_key(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="model.codec.path"):
        VAECodec(tmp_path / "missing")


def test_vae_posterior_noise_comes_from_the_samples_draws_or_the_sampling_generator(vae_folder) -> None:
    """Training encodes with each sample's own posterior noise (src.trainers.sample_draws): a sample's latents are
    mean + std * its draws, the same alone or batched and whatever torch's global RNG holds (which every rank
    seeds alike). Sampling takes the noise from its generator, so the seed alone fixes it."""
    from src.trainers.frozen_parts import FrozenPartsMixin
    from src.trainers.sample_draws import SampleDraws

    vae, folder = vae_folder
    parts = FrozenPartsMixin()
    parts.codec = VAECodec(folder, sample_posterior=True, slice_size=3)
    video = torch.rand(2, 3, 2, 16, 16) * 2 - 1  # b c t h w
    with torch.no_grad():
        torch.manual_seed(1)
        both = parts.encode_video(video, SampleDraws(0, torch.tensor([5, 9])))
        torch.manual_seed(2)
        alone = parts.encode_video(video[1:], SampleDraws(0, torch.tensor([9])))
        posterior = vae.encode(video[1].transpose(0, 1)).latent_dist
    noise = SampleDraws(0, torch.tensor([9])).normal("video_posterior", (2, 4, 8, 8))[0]
    expected = (posterior.mean + posterior.std * noise) * 0.5  # frames of sample 9: `t c h w`
    torch.testing.assert_close(alone[0].transpose(0, 1), expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(both[1:], alone, rtol=1e-5, atol=1e-6)
    with torch.no_grad():
        other = parts.encode_video(video[1:], SampleDraws(0, torch.tensor([10])))
        images = video[:, :, 0]
        torch.manual_seed(3)
        first = parts.encode_images(images, generator=torch.Generator().manual_seed(7))
        torch.manual_seed(4)
        again = parts.encode_images(images, generator=torch.Generator().manual_seed(7))
    assert not torch.allclose(other, alone)
    assert torch.equal(first, again)
    with pytest.raises(ValueError, match="posterior noise"):
        parts.codec.encode(images, noise=torch.zeros(2, 4, 4, 4))
