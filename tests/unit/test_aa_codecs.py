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
