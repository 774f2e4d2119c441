import pytest
import torch

from tests.conftest import tiny_autoencoder_config
from vaetrain.losses import LossConfig, adaptive_gan_weight, discriminator_loss, generator_adversarial_loss, generator_loss, kl_divergence, reconstruction_loss
from vaetrain.models import DiscriminatorConfig, PatchDiscriminator, build_autoencoder
from vaetrain.models.last_layers import LastLayerInput


def _forward(seed: int = 0):
    torch.manual_seed(seed)
    autoencoder = build_autoencoder(tiny_autoencoder_config())
    # eval: spectral norm's power iteration would change D between the compared forwards
    discriminator = PatchDiscriminator(DiscriminatorConfig(base_channels=8, num_layers=2)).eval()
    images = torch.rand(2, 3, 32, 32) * 2 - 1
    last_layer = LastLayerInput(autoencoder)
    posterior = autoencoder.encode(images).latent_dist
    reconstruction = autoencoder.decode(posterior.mean).sample
    autoencoder.last_layer_grad = last_layer.take_weight_gradient()
    return autoencoder, discriminator, images, posterior, reconstruction


def test_kl_sum_is_ldm_and_mean_is_per_element():
    mean, logvar = torch.randn(3, 4, 5, 6), torch.randn(3, 4, 5, 6) * 0.5
    by_hand = 0.5 * (mean**2 + logvar.exp() - 1 - logvar)  # KL(N(mu, var) || N(0, 1)) per element
    assert torch.allclose(kl_divergence(mean, logvar, "sum"), by_hand.sum(dim=(1, 2, 3)).mean(), rtol=1e-5)
    assert torch.allclose(kl_divergence(mean, logvar, "mean"), by_hand.mean(), rtol=1e-5)


def test_reconstruction_reductions():
    target, recon = torch.rand(2, 3, 8, 8), torch.rand(2, 3, 8, 8)
    l1 = (target - recon).abs()
    assert torch.allclose(reconstruction_loss(target, recon, "l1", "mean"), l1.mean())
    assert torch.allclose(reconstruction_loss(target, recon, "l1", "sum"), l1.sum() / 2)
    assert torch.allclose(reconstruction_loss(target, recon, "l2", "mean"), ((target - recon) ** 2).mean())


def test_vanilla_generator_loss_is_the_saturating_minimax_term():
    """vanilla: E[log(1 - sigmoid(D(x_hat)))], the generator's side of the original GAN objective."""
    fake = torch.tensor([-3.0, -0.5, 0.0, 2.0])
    by_hand = torch.log(1 - torch.sigmoid(fake)).mean()
    assert generator_adversarial_loss(fake, "vanilla").item() == pytest.approx(by_hand.item(), rel=1e-6)


def test_gan_losses_on_known_logits():
    real, fake = torch.tensor([2.0, 0.5]), torch.tensor([-2.0, 0.5])
    assert discriminator_loss(real, fake, "hinge").item() == pytest.approx(0.5 * (0.25 + 0.75))
    assert generator_adversarial_loss(fake, "hinge").item() == pytest.approx(0.75)
    sp = torch.nn.functional.softplus
    assert generator_adversarial_loss(fake, "non_saturating").item() == pytest.approx(sp(-fake).mean().item())
    assert discriminator_loss(real, fake, "vanilla").item() == pytest.approx(0.5 * (sp(-real).mean() + sp(fake).mean()).item())


def test_adaptive_weight_equals_hand_computation(random_lpips):
    """LDM's calculate_adaptive_weight, written out: grads of nll and g_loss at the last layer."""
    autoencoder, discriminator, images, posterior, reconstruction = _forward()
    config = LossConfig(perceptual_weight=1.0, disc_weight=0.5)
    last = autoencoder.decoder.conv_out.weight
    output = generator_loss(
        images,
        reconstruction,
        posterior.mean,
        posterior.logvar,
        config=config,
        perceptual=random_lpips,
        last_layer_grad=autoencoder.last_layer_grad,
        discriminator=discriminator,
    )
    nll = (reconstruction - images).abs().mean() + random_lpips(reconstruction, images).mean()
    g_loss = -discriminator(reconstruction).mean()
    nll_grad = torch.autograd.grad(nll, last, retain_graph=True)[0]
    g_grad = torch.autograd.grad(g_loss, last, retain_graph=True)[0]
    by_hand = (nll_grad.norm() / (g_grad.norm() + 1e-4)).clamp(0, 1e4) * 0.5
    assert output.terms["adaptive_weight"].item() == pytest.approx(by_hand.item(), rel=1e-4)


def test_backward_target_gives_the_total_loss_gradient(random_lpips):
    """One backward of the surrogate = the gradient of rec + LPIPS + w * adv + kl_weight * KL."""
    autoencoder, discriminator, images, posterior, reconstruction = _forward()
    config = LossConfig(kl_weight=0.1, disc_weight=0.5)
    output = generator_loss(
        images,
        reconstruction,
        posterior.mean,
        posterior.logvar,
        config=config,
        perceptual=random_lpips,
        last_layer_grad=autoencoder.last_layer_grad,
        discriminator=discriminator,
    )
    weight = output.terms["adaptive_weight"]
    params = [p for p in autoencoder.parameters()]
    surrogate_grads = torch.autograd.grad(output.backward_target, params, retain_graph=True, allow_unused=True)
    direct = (
        (reconstruction - images).abs().mean()
        + random_lpips(reconstruction, images).mean()
        + weight * -discriminator(reconstruction).mean()
        + 0.1 * kl_divergence(posterior.mean, posterior.logvar, "mean")
    )
    assert direct.item() == pytest.approx(output.total.item(), rel=1e-5)
    direct_grads = torch.autograd.grad(direct, params, allow_unused=True)
    for a, b in zip(surrogate_grads, direct_grads):
        assert (a is None) == (b is None)
        if a is not None:
            assert torch.allclose(a, b, rtol=1e-4, atol=1e-7)


def test_lpips_gradient_reaches_decoder_and_encoder_only_through_the_reconstruction(random_lpips):
    """With LPIPS the only term, the decoder gets a gradient and the encoder gets one through the latents;
    what reaches the autoencoder is exactly d LPIPS / d reconstruction (not a no_grad copy's zero)."""
    autoencoder, _, images, posterior, reconstruction = _forward()
    config = LossConfig(reconstruction_weight=0.0, perceptual_weight=1.0, kl_weight=0.0)
    output = generator_loss(
        images, reconstruction, posterior.mean, posterior.logvar, config=config, perceptual=random_lpips, last_layer_grad=autoencoder.last_layer_grad
    )
    (through_step,) = torch.autograd.grad(output.backward_target, reconstruction, retain_graph=True)
    (direct,) = torch.autograd.grad(random_lpips(reconstruction, images).mean(), reconstruction, retain_graph=True)
    torch.testing.assert_close(through_step, direct)
    output.backward_target.backward()
    assert autoencoder.decoder.conv_out.weight.grad.abs().sum() > 0
    assert autoencoder.encoder.conv_in.weight.grad.abs().sum() > 0


def test_generator_loss_does_not_touch_discriminator_grads(random_lpips):
    autoencoder, discriminator, images, posterior, reconstruction = _forward()
    output = generator_loss(
        images,
        reconstruction,
        posterior.mean,
        posterior.logvar,
        config=LossConfig(),
        perceptual=random_lpips,
        last_layer_grad=autoencoder.last_layer_grad,
        discriminator=discriminator,
    )
    output.backward_target.backward()
    assert output.terms["adversarial"].abs() > 0
    assert all(p.grad is None for p in discriminator.parameters())


def test_adaptive_weight_is_clamped():
    value = adaptive_gan_weight(torch.ones(2, 2), torch.zeros(2, 2), lambda g: 3 * g, max_weight=10.0)
    assert value.item() == 10.0


def test_last_layer_weight_gradient_equals_autograd():
    """The directly computed gradient of the decoder's last convolution is autograd's."""
    torch.manual_seed(0)
    autoencoder = build_autoencoder(tiny_autoencoder_config())
    last_layer = LastLayerInput(autoencoder)
    reconstruction = autoencoder(torch.rand(2, 3, 32, 32) * 2 - 1).sample
    grad_output = torch.randn_like(reconstruction)
    (expected,) = torch.autograd.grad(reconstruction, autoencoder.decoder.conv_out.weight, grad_outputs=grad_output)
    torch.testing.assert_close(last_layer.take_weight_gradient()(grad_output), expected, rtol=1e-5, atol=1e-6)
    with torch.no_grad():
        autoencoder(torch.rand(1, 3, 32, 32))  # a forward without gradients (validation) is not kept
    with pytest.raises(RuntimeError, match="no forward with gradients"):
        last_layer.take_weight_gradient()


def test_sum_reduction_is_ldms_lpips_with_discriminator():
    """LDM's `LPIPSWithDiscriminator.forward` (ldm/modules/losses/contperceptual.py, generator branch, logvar 0
    as LDM leaves it), written out: rec = |x - x_hat| + w_p * p (p broadcast over every pixel and channel),
    nll = sum(rec) / B, kl = sum(posterior.kl()) / B, loss = nll + kl_weight * kl + d_weight * (-mean(D(x_hat)))."""
    torch.manual_seed(0)
    images, reconstruction = torch.rand(2, 3, 8, 8) * 2 - 1, (torch.rand(2, 3, 8, 8) * 2 - 1).requires_grad_(True)
    mean, logvar = torch.randn(2, 4, 2, 2), torch.randn(2, 4, 2, 2) * 0.3

    def perceptual(a, b):  # any per-image distance
        return ((a - b) ** 2).flatten(1).mean(1) * 0.7

    discriminator = torch.nn.Conv2d(3, 1, 3, padding=1)
    config = LossConfig(reduction="sum", perceptual_weight=1.0, kl_weight=1e-6, disc_weight=0.5, balance="fixed")
    output = generator_loss(images, reconstruction, mean, logvar, config=config, perceptual=perceptual, discriminator=discriminator)

    p_loss = perceptual(images, reconstruction)[:, None, None, None]
    rec_loss = (images - reconstruction).abs() + 1.0 * p_loss
    nll_loss = rec_loss.sum() / rec_loss.shape[0]
    kl = 0.5 * (mean**2 + logvar.exp() - 1.0 - logvar).sum(dim=(1, 2, 3))
    kl_loss = kl.sum() / kl.shape[0]
    g_loss = -discriminator(reconstruction).mean()
    ldm = nll_loss + 1e-6 * kl_loss + 0.5 * g_loss

    assert output.total.item() == pytest.approx(ldm.item(), rel=1e-5)
    assert output.terms["kl"].item() == pytest.approx(kl_loss.item(), rel=1e-5)
    (ours,) = torch.autograd.grad(output.backward_target, reconstruction)
    (theirs,) = torch.autograd.grad(ldm, reconstruction)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-7)
