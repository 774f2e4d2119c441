"""EQ-VAE's transforms, VA-VAE's alignment loss and adaptive weight, latent noise: against hand computations."""

import math

import pytest
import torch
import torch.nn.functional as F

from tests.conftest import tiny_autoencoder_config
from vaetrain.losses.alignment import AlignmentConfig, AlignmentHead, alignment_loss
from vaetrain.losses.equivariance import EquivarianceConfig, LatentTransform, draw_low_resolution, draw_transform
from vaetrain.models import build_autoencoder
from vaetrain.models.feature_encoders import RandomFeatures
from vaetrain.models.last_layers import EncoderLastLayer
from vaetrain.training.features.alignment import AlignmentTerm
from vaetrain.training.features.latent_noise import noisy_latents


def test_a_rotation_commutes_with_a_decoder_that_upsamples():
    """The image target is the latent's transform seen through the decoder: for a decoder that repeats each
    latent pixel f x f times, rotating first or after gives the same image (same direction, same turns)."""

    def decode(z):
        return z.repeat_interleave(4, dim=-1).repeat_interleave(4, dim=-2)

    z = torch.randn(2, 3, 5, 7)
    for turns in (1, 2, 3):
        transform = LatentTransform(None, turns)
        assert torch.equal(decode(transform.latents(z)), transform.images(decode(z), 4))


def test_downscaled_latent_and_image_keep_the_factor():
    transform = LatentTransform((3, 5), 1)
    z, images = torch.randn(2, 4, 8, 12), torch.rand(2, 3, 64, 96)
    assert transform.latents(z).shape == (2, 4, 5, 3)  # resized to 3 x 5, then a quarter turn
    assert transform.images(images, 8).shape == (2, 3, 40, 24)
    expected = F.interpolate(images, size=(24, 40), mode="bilinear", align_corners=False).rot90(1, dims=[-1, -2])
    torch.testing.assert_close(transform.images(images, 8), expected)


def test_draws_follow_the_reference_ranges():
    config = EquivarianceConfig(probability=1.0, min_scale=0.25, max_scale=0.97)
    torch.manual_seed(0)
    draws = [draw_transform(config, (32, 32), 8) for _ in range(400)]
    sides = {d.size[0] for d in draws}
    assert sides == set(range(8, 32))  # the reference's {8 .. 31} / 32 of a 32-wide latent
    assert {d.quarter_turns for d in draws} == {1, 2, 3} and all(d.size[0] == d.size[1] for d in draws)
    assert draw_transform(EquivarianceConfig(probability=0.0), (32, 32), 8) is None
    torch.manual_seed(0)
    shares = [draw_transform(EquivarianceConfig(probability=0.5), (8, 8), 8) is not None for _ in range(2000)]
    assert abs(sum(shares) / 2000 - 0.5) < 0.05
    torch.manual_seed(0)
    low = [draw_low_resolution(EquivarianceConfig(probability=0.5, low_resolution_probability=1.0), (64, 64), 8) for _ in range(50)]
    assert {size[0] for size in low} == {32, 40, 48, 56}  # multiples of 8 from min_image_side (32) below 64
    # a small model at 32 px (latent 8, f4): no side keeps the image at 32 px, so the latent is only rotated
    only_turns = [draw_transform(EquivarianceConfig(probability=1.0), (8, 8), 4) for _ in range(20)]
    assert all(t.size is None and t.quarter_turns in (1, 2, 3) for t in only_turns)
    assert draw_transform(EquivarianceConfig(probability=1.0, rotate=False), (8, 8), 4) is None


def _alignment_by_hand(z, f, m1, m2):
    cos = torch.nn.functional.cosine_similarity
    batch, _, h, w = z.shape
    zs, fs = z.flatten(2), f.flatten(2)
    distmat, cosine = 0.0, 0.0
    for b in range(batch):
        for i in range(h * w):
            cosine += max(0.0, 1 - m1 - float(cos(zs[b, :, i], fs[b, :, i], dim=0)))
            for j in range(h * w):
                difference = abs(float(cos(zs[b, :, i], zs[b, :, j], dim=0)) - float(cos(fs[b, :, i], fs[b, :, j], dim=0)))
                distmat += max(0.0, difference - m2)
    return distmat / (batch * (h * w) ** 2) + cosine / (batch * h * w)


def test_alignment_loss_by_hand_with_margins():
    torch.manual_seed(0)
    z, f = torch.randn(2, 5, 3, 3), torch.randn(2, 5, 3, 3)
    for m1, m2 in ((0.0, 0.0), (0.5, 0.25), (1.5, 2.0)):
        config = AlignmentConfig(weight=1.0, cos_margin=m1, distmat_margin=m2)
        assert alignment_loss(z, f, config).item() == pytest.approx(_alignment_by_hand(z, f, m1, m2), rel=1e-5)
    assert alignment_loss(f, f, AlignmentConfig(weight=1.0, cos_margin=0.0, distmat_margin=0.0)).item() == pytest.approx(0.0, abs=1e-6)


def test_features_on_another_grid_are_resized_to_the_latents():
    z, f = torch.randn(1, 4, 8, 8), torch.randn(1, 4, 4, 4)
    resized = F.interpolate(f, size=(8, 8), mode="bilinear", align_corners=False)
    config = AlignmentConfig(weight=1.0)
    assert alignment_loss(z, f, config).item() == pytest.approx(alignment_loss(z, resized, config).item())


def test_encoder_last_layer_gradient_equals_autograd():
    torch.manual_seed(0)
    autoencoder = build_autoencoder(tiny_autoencoder_config())
    last = EncoderLastLayer(autoencoder)
    mean = autoencoder.encode(torch.rand(2, 3, 32, 32) * 2 - 1).latent_dist.mean
    upstream = torch.randn_like(mean)
    (expected,) = torch.autograd.grad((mean * upstream).sum(), autoencoder.encoder.conv_out.weight)
    torch.testing.assert_close(last.weight_gradient(upstream), expected, rtol=1e-4, atol=1e-6)


def test_alignment_adaptive_weight_is_the_gradient_norm_ratio_at_the_encoders_last_layer():
    """VA-VAE `calculate_adaptive_weight_vf`: ||d image-terms / d W|| / (||d alignment / d W|| + 1e-4), W the
    encoder's last conv; here measured in one update and applied from the next."""
    torch.manual_seed(0)
    autoencoder = build_autoencoder(tiny_autoencoder_config())
    encoder, head = RandomFeatures(feature_dim=6), AlignmentHead(4, 6)
    last = EncoderLastLayer(autoencoder)
    term = AlignmentTerm(AlignmentConfig(weight=0.1), last)
    images = torch.rand(2, 3, 32, 32) * 2 - 1
    latents = autoencoder.encode(images).latent_dist.mean
    extra, decoder_input, logs = term.weighted_loss(images, latents, encoder, head)
    assert float(logs["train/alignment_weight"]) == 0.0  # nothing measured yet
    image_loss = (autoencoder.decode(decoder_input).sample - images).abs().mean()
    (image_grad_z,) = torch.autograd.grad(image_loss, latents, retain_graph=True)
    (alignment_grad_z,) = torch.autograd.grad(alignment_loss(head(latents), encoder(images), term.config), latents, retain_graph=True)
    (image_loss + extra).backward()
    term.observe(loss_scale=1.0, accumulate=1)
    term.settle(head, None)
    expected = last.weight_gradient(image_grad_z).norm() / (last.weight_gradient(alignment_grad_z).norm() + 1e-4)
    assert head.ratio.item() == pytest.approx(expected.item(), rel=1e-4)
    assert "ratio" in head.state_dict()  # checkpointed with the head, so a resumed run weighs alike
    _, _, logs = term.weighted_loss(images, autoencoder.encode(images).latent_dist.mean, encoder, head)
    assert float(logs["train/alignment_weight"]) == pytest.approx(0.1 * expected.item(), rel=1e-4)


def test_latent_noise_is_relative_to_the_latents_scale():
    torch.manual_seed(0)
    z = torch.randn(4000, 4, 2, 2) * 3
    assert torch.equal(noisy_latents(z, 0.0), z)
    noise = noisy_latents(z, 0.5) - z
    per_image = noise.flatten(1).std(dim=1) / z.std()
    # sigma ~ U(0, 0.5) of the latent std, per image: some images get almost none, none gets much more than 0.5
    assert per_image.min() < 0.02 and 0.4 < per_image.max() < 0.5 * 1.6
    assert per_image.mean().item() == pytest.approx(0.25, abs=0.03)
    assert math.isfinite(float(noise.sum()))


def test_perceptual_loss_takes_images_smaller_than_alexnet_needs():
    """EQ-VAE's downscaled targets of a small model reach LPIPS at 8 px: upsampled to MIN_SIDE first."""
    from vaetrain.losses.perceptual import MIN_SIDE, build_perceptual_loss

    torch.manual_seed(0)
    lpips = build_perceptual_loss("alex", "random")
    small = torch.rand(2, 3, 8, 12) * 2 - 1
    other = torch.rand(2, 3, 8, 12) * 2 - 1
    distance = lpips(small, other)
    up = [torch.nn.functional.interpolate(x, size=(MIN_SIDE, 48), mode="bilinear", align_corners=False) for x in (small, other)]
    assert distance.shape == (2,) and torch.allclose(distance, lpips(*up))
