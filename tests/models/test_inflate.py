"""A pretrained 3-channel autoencoder started for N channels keeps what its rule guarantees (models/inflate.py)."""

import pytest
import torch
from diffusers import AutoencoderKL, AutoencoderTiny

from tests.conftest import tiny_diffusers_kl
from vaetrain.errors import ConfigError
from vaetrain.models.autoencoder import AutoencoderConfig, build_autoencoder
from vaetrain.models.inflate import inflate_channels


@torch.no_grad()
def test_six_band_model_reads_zero_extra_bands_as_the_rgb_model_and_writes_its_rgb():
    original, images = tiny_diffusers_kl(), torch.rand(2, 3, 16, 16) * 2 - 1
    inflated = inflate_channels(tiny_diffusers_kl(), 6, 6)
    padded = torch.cat([images, torch.zeros(2, 3, 16, 16)], dim=1)
    expected_latent = original.encode(images).latent_dist.mean
    assert torch.allclose(inflated.encode(padded).latent_dist.mean, expected_latent, atol=1e-6)
    out = inflated.decode(expected_latent).sample
    rgb = original.decode(expected_latent).sample
    assert out.shape[1] == 6 and torch.allclose(out[:, :3], rgb, atol=1e-6)
    assert torch.allclose(out[:, 3:], rgb.mean(dim=1, keepdim=True).expand(-1, 3, -1, -1), atol=1e-5)  # mean of the RGB rows
    assert inflated.config.in_channels == 6 and inflated.config.out_channels == 6


@torch.no_grad()
def test_grayscale_model_encodes_as_the_rgb_model_on_the_replicated_image_and_decodes_its_gray():
    original, gray = tiny_diffusers_kl(), torch.rand(2, 1, 16, 16) * 2 - 1
    inflated = inflate_channels(tiny_diffusers_kl(), 1, 1)
    latent = original.encode(gray.expand(-1, 3, -1, -1)).latent_dist.mean
    assert torch.allclose(inflated.encode(gray).latent_dist.mean, latent, atol=1e-5)
    assert torch.allclose(inflated.decode(latent).sample, original.decode(latent).sample.mean(dim=1, keepdim=True), atol=1e-5)


@torch.no_grad()
def test_pretrained_folder_is_inflated_on_load_and_the_export_reloads(tmp_path):
    tiny_diffusers_kl().save_pretrained(tmp_path / "rgb")
    model = build_autoencoder(AutoencoderConfig(pretrained=str(tmp_path / "rgb"), in_channels=4, out_channels=4))
    model.save_pretrained(tmp_path / "rgba")
    reloaded = AutoencoderKL.from_pretrained(tmp_path / "rgba").eval()
    images = torch.rand(1, 4, 16, 16)
    assert torch.equal(reloaded(images, sample_posterior=False).sample, model.eval()(images, sample_posterior=False).sample)

    torch.manual_seed(0)
    tiny = inflate_channels(
        AutoencoderTiny(encoder_block_out_channels=(8, 8), decoder_block_out_channels=(8, 8), num_encoder_blocks=(1, 1), num_decoder_blocks=(1, 1)), 5, 5
    )
    assert tiny.decode(tiny.encode(torch.rand(1, 5, 16, 16)).latents).sample.shape[1] == 5
    with pytest.raises(ConfigError, match="3-channel"):
        inflate_channels(tiny, 2, 2)


def test_a_six_channel_run_needs_a_six_channel_discriminator_and_lpips_triplets_or_none():
    from tests.conftest import tiny_module

    with pytest.raises(ConfigError, match="discriminator.in_channels=3"):  # an explicit mismatch; the default follows
        tiny_module(autoencoder={"in_channels": 6, "out_channels": 6}, discriminator={"in_channels": 3}, loss={"perceptual_weight": 0.0})
    with pytest.raises(ConfigError, match="LPIPS is defined on RGB"):
        tiny_module(autoencoder={"in_channels": 6, "out_channels": 6}, discriminator={"in_channels": 6})
    module = tiny_module(autoencoder={"in_channels": 6, "out_channels": 6}, discriminator={"in_channels": 6}, loss={"perceptual_weight": 0.0})
    assert module(torch.rand(1, 6, 16, 16)).shape == (1, 6, 16, 16)
    assert tiny_module(autoencoder={"in_channels": 6, "out_channels": 6}, loss={"perceptual_weight": 0.0}).discriminator(torch.rand(1, 6, 32, 32)).ndim == 4
    with_triplets = tiny_module(autoencoder={"in_channels": 6, "out_channels": 6}, loss={"perceptual_channels": "each"})
    assert with_triplets.perceptual(torch.rand(2, 6, 32, 32), torch.rand(2, 6, 32, 32)).shape == (2,)
