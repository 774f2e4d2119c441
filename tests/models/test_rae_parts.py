"""The rae family's parts: noise only in training, the adaptive weight's layer, gradient checkpointing, tiling
for other sizes, DiffAugment against a hand computation, the DINO discriminator, RAE's cosine schedule."""

import math

import pytest
import torch

from vaetrain.errors import ConfigError
from vaetrain.models.autoencoder import AutoencoderConfig, build_autoencoder
from vaetrain.models.diffaugment import diff_augment
from vaetrain.models.discriminator import DiscriminatorConfig, build_discriminator
from vaetrain.models.families import family_of
from vaetrain.models.last_layers import LastLayerInput
from vaetrain.training.optim import OptimizerConfig, build_scheduler

RAE = {  # a 32 px AutoencoderRAE: random 64-wide DINOv2-with-registers encoder, 4 x 4 tokens, decoder patch 8
    "encoder_type": "dinov2",
    "encoder_hidden_size": 64,
    "encoder_patch_size": 8,
    "encoder_num_hidden_layers": 1,
    "encoder_input_size": 32,
    "decoder_hidden_size": 32,
    "decoder_num_hidden_layers": 2,
    "decoder_num_attention_heads": 2,
    "decoder_intermediate_size": 64,
    "patch_size": 8,
    "noise_tau": 0.8,
}
DINO = {"hidden_size": 32, "num_hidden_layers": 3, "num_attention_heads": 2, "intermediate_size": 64, "patch_size": 8, "image_size": 32}


def tiny_rae(**architecture):
    torch.manual_seed(0)
    return build_autoencoder(AutoencoderConfig(family="rae", train_encoder=False, architecture=RAE | architecture))


def test_noise_is_added_to_the_tokens_in_training_only_with_a_per_sample_sigma_up_to_tau():
    model, images = tiny_rae(), torch.rand(3, 3, 32, 32) * 2 - 1
    family = family_of(model)
    model.eval()
    clean = family.encode(model, images).mean
    assert torch.equal(clean, family.encode(model, images).mean)
    model.train()
    torch.manual_seed(5)
    noisy = family.encode(model, images).mean
    torch.manual_seed(5)  # diffusers' `_noising`, by hand: sigma = tau * U(0, 1) per sample, then N(0, 1) noise on the tokens
    sigma = 0.8 * torch.rand(3, 1, 1)
    noise = torch.randn(3, 16, 64)
    expected = clean + (sigma * noise).transpose(1, 2).reshape(3, 64, 4, 4) / (1 + 1e-5)
    assert torch.allclose(noisy, expected, atol=1e-5)
    assert not torch.allclose(noisy, clean)


def test_the_adaptive_weights_layer_gradient_equals_autograds():
    model = tiny_rae()
    family, last = family_of(model), LastLayerInput(model)
    model.train()
    reconstruction = family.decode(model, family.encode(model, torch.rand(2, 3, 32, 32) * 2 - 1).mean)
    grad = torch.randn_like(reconstruction)
    direct = last.take_weight_gradient()(grad)
    (reconstruction * grad).sum().backward()
    assert torch.allclose(direct, model.decoder.decoder_pred.weight.grad, atol=1e-5)


def test_decoder_gradient_checkpointing_gives_the_same_gradients():
    grads = []
    for checkpointing in (False, True):
        model = tiny_rae()
        family_of(model).set_gradient_checkpointing(model, checkpointing)
        assert model.is_gradient_checkpointing == checkpointing
        latents = torch.randn(2, 64, 4, 4)
        family_of(model).decode(model, latents).square().mean().backward()
        grads.append([p.grad.clone() for p in model.decoder.parameters() if p.requires_grad])
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(*grads))


def test_the_decoders_patch_size_decides_the_output_and_other_sizes_are_tiled():
    model = tiny_rae(patch_size=16).eval()  # the same 4 x 4 tokens, 64 px out (RAE's 512 px from 224 px input, in small)
    family = family_of(model)
    assert family.downsampling_factor(model) == 16
    images = torch.rand(1, 3, 64, 64) * 2 - 1
    assert family.decode(model, family.encode(model, images).mean).shape == (1, 3, 64, 64)
    tiled = torch.cat([torch.cat([images, images], 3)] * 2, 2)  # 2 x 2 copies: each tile reconstructs alone
    latents = family.encode(model, tiled).mean
    assert latents.shape == (1, 64, 8, 8)
    assert torch.allclose(family.decode(model, latents)[..., 64:, 64:], family.decode(model, family.encode(model, images).mean), atol=1e-5)
    assert family.check_sides(model, [64]) is None and "64 px" in family.check_sides(model, [48])


def test_rae_settings_that_would_be_ignored_are_refused():
    with pytest.raises(ConfigError, match="train_encoder"):
        build_autoencoder(AutoencoderConfig(family="rae", architecture=RAE))
    with pytest.raises(ConfigError, match="latent_channels"):
        AutoencoderConfig(family="rae", train_encoder=False, latent_channels=8)
    with pytest.raises(ConfigError, match="encoder_pretrained"):
        AutoencoderConfig(encoder_pretrained="facebook/dinov2-with-registers-base")


def test_diff_augment_is_the_references_formula():
    """Translation by whole pixels with a zero border, then brightness, saturation and contrast, from the
    same draws as bytetriper/RAE's `DiffAug.aug` (torch.rand(3), then torch.rand(7, B, 1, 1))."""
    images = torch.rand(2, 3, 16, 16) * 2 - 1
    torch.manual_seed(3)
    augmented = diff_augment(images, prob=1.0)
    torch.manual_seed(3)
    torch.rand(3)
    r = torch.rand(7, 2, 1, 1).flatten(1)
    expected = torch.zeros_like(images)
    for b in range(2):
        dy, dx = (math.floor(r[i, b] * 5) - 2 for i in (0, 1))  # delta = round(16 / 8) = 2
        for y in range(16):
            for x in range(16):
                if 0 <= y + dy < 16 and 0 <= x + dx < 16:
                    expected[b, :, y, x] = images[b, :, y + dy, x + dx]
        image = expected[b] + (r[2, b] - 0.5)
        image = (image - image.mean(0)) * (2 * r[3, b]) + image.mean(0)
        expected[b] = (image - image.mean()) * (r[4, b] + 0.5) + image.mean()
    assert torch.allclose(augmented, expected, atol=1e-5)
    assert torch.equal(diff_augment(images, prob=0.0), images)


def test_dino_discriminator_trains_heads_on_a_frozen_backbone():
    config = DiscriminatorConfig(kind="dino", dino_architecture=DINO, dino_key_depths=(0, 1, 5), dino_input_size=32, diffaugment_prob=1.0)
    discriminator = build_discriminator(config).train()
    assert len(discriminator.heads) == 3  # the last block's, and blocks 0 and 1 (5 is past the depth: the reference's filter)
    assert not discriminator.backbone.training and not any(p.requires_grad for p in discriminator.backbone.parameters())
    images = (torch.rand(2, 3, 32, 32) * 2 - 1).requires_grad_(True)
    logits = discriminator(images)
    assert logits.shape == (2, 3 * 16)
    logits.sum().backward()
    assert images.grad.abs().sum() > 0 and all(p.grad is not None for p in discriminator.heads.parameters())
    with pytest.raises(ConfigError, match="dino_kernel"):
        build_discriminator(DiscriminatorConfig(dino_kernel=3))
    with pytest.raises(ConfigError, match="base_channels"):
        build_discriminator(DiscriminatorConfig(kind="dino", dino_architecture=DINO, base_channels=8))


def test_raes_cosine_schedule_warms_up_from_zero_and_ends_at_the_final_rate():
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=2e-4)
    scheduler = build_scheduler(optimizer, OptimizerConfig(lr=2e-4, scheduler="cosine_with_min_lr", min_lr_rate=0.1, warmup_steps=4), 14)
    rates = []
    for _ in range(16):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    cosine = [2e-5 + 1.8e-4 * 0.5 * (1 + math.cos(math.pi * (s - 4) / 10)) for s in range(4, 14)]
    assert rates == pytest.approx([2e-4 * (s + 1) / 4 for s in range(4)] + cosine + [2e-5, 2e-5])
    with pytest.raises(ConfigError, match="min_lr_rate"):
        OptimizerConfig(min_lr_rate=0.1)


def test_the_wide_probe_is_at_least_as_wide_as_rae_tokens():
    from vaetrain.evaluation.diffusability_probe import ProbeConfig, build_model

    plain, wide = (build_model(ProbeConfig(width=width), 768, 16) for width in ("plain", "wide"))
    assert plain.inner_dim == 128 and wide.inner_dim >= 768
    assert build_model(ProbeConfig(width="wide"), 4, 8).inner_dim == 128  # a KL VAE's 4 channels: the tiny width as it is
