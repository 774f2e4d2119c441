"""The vqgan-training recipe's formulas against hand computations on tiny tensors."""

import math

import pytest
import torch
import torch.nn.functional as F

from vaetrain.losses import (
    LossConfig,
    PooledReconstruction,
    Processes,
    discriminator_loss,
    flat_region_mask,
    generator_adversarial_loss,
    generator_loss,
    global_norm,
    gradnorm,
    latent_penalty,
    pooled_reconstruction_loss,
    r1_penalty,
)
from vaetrain.losses.lecam import LeCamAnchors, lecam_penalty


def test_gradnorm_is_identity_forward_and_scales_the_gradient_to_its_weight():
    x = torch.randn(2, 3, 4, 4, requires_grad=True)
    upstream = torch.randn(2, 3, 4, 4)
    y = gradnorm(x, 0.3)
    assert torch.equal(y, x)
    (y * upstream).sum().backward()
    torch.testing.assert_close(x.grad, 0.3 * upstream / (upstream.norm() + 1e-8))
    assert x.grad.norm().item() == pytest.approx(0.3, rel=1e-6)


def test_global_norm_over_processes_is_the_single_process_norm():
    """Each of P processes holds the gradient of its own batch mean: P times the global mean's gradient on
    its samples. Averaging ||g_p||^2 and dividing by P gives the global batch's norm exactly."""
    single = torch.randn(4, 3, 2, 2)  # d (mean over 4 images) / d x
    halves = [2 * single[:2], 2 * single[2:]]  # d (mean over each process's 2 images) / d x
    squares = [h.pow(2).sum() for h in halves]
    for rank, half in enumerate(halves):
        processes = Processes(count=2, mean=lambda t, r=rank: (t + squares[1 - r]) / 2)
        assert global_norm(half, processes).item() == pytest.approx(single.norm().item(), rel=1e-6)


def test_gradnorm_balance_gives_each_term_its_weighted_unit_gradient():
    """Under balance gradnorm the gradient reaching the reconstruction is the sum over terms of
    weight_k * g_k / ||g_k||, g_k each term's own gradient (vqgan-training: LPIPS 1, pixel 0.001, GAN 1)."""
    torch.manual_seed(0)
    images = torch.rand(2, 3, 16, 16) * 2 - 1
    reconstruction = (torch.rand(2, 3, 16, 16) * 2 - 1).requires_grad_(True)
    mean, logvar = torch.randn(2, 4, 4, 4), torch.zeros(2, 4, 4, 4)

    def perceptual(a, b):  # any per-image distance
        return (a - b).pow(2).flatten(1).mean(1).sqrt()

    discriminator = torch.nn.Conv2d(3, 1, 3, padding=1)
    config = LossConfig(
        balance="gradnorm",
        reconstruction_weight=0.001,
        perceptual_weight=1.0,
        disc_weight=1.0,
        kl_weight=0.0,
        pooled_reconstruction=PooledReconstruction(weight=0.5, factor=4),
    )
    output = generator_loss(images, reconstruction, mean, logvar, config=config, perceptual=perceptual, discriminator=discriminator)
    (ours,) = torch.autograd.grad(output.backward_target, reconstruction)

    terms = {
        0.001: (reconstruction - images).abs().mean(),
        1.0: perceptual(reconstruction, images).mean(),
        0.5: (F.avg_pool2d(reconstruction, 4) - F.avg_pool2d(images, 4)).abs().mean(),
    }
    by_hand = torch.zeros_like(reconstruction)
    for weight, value in terms.items():
        (g,) = torch.autograd.grad(value, reconstruction, retain_graph=True)
        by_hand += weight * g / (g.norm() + 1e-8)
    (g,) = torch.autograd.grad(-discriminator(reconstruction).mean(), reconstruction)
    by_hand += 1.0 * g / (g.norm() + 1e-8)
    torch.testing.assert_close(ours, by_hand, rtol=1e-4, atol=1e-7)  # elements ~3e-2: rounding of the summation order


def test_thresholded_hinge_on_known_logits():
    """mean(relu(D(x) - D(x_hat) - 0.1)), real logits detached; its discriminator trains with BCE."""
    real = torch.tensor([2.0, 0.5, 1.0], requires_grad=True)
    fake = torch.tensor([1.0, 1.0, 0.95], requires_grad=True)
    loss = generator_adversarial_loss(fake, "thresholded_hinge", real, margin=0.1)
    assert loss.item() == pytest.approx((0.9 + 0.0 + 0.0) / 3)  # only the first pair is past the margin
    loss.backward()
    assert real.grad is None and fake.grad.tolist() == pytest.approx([-1 / 3, 0.0, 0.0])
    bce = 0.5 * (math.log(1 + math.exp(-2.0)) + math.log(1 + math.exp(1.0))) / 1  # one real, one fake logit
    assert discriminator_loss(torch.tensor([2.0]), torch.tensor([1.0]), "thresholded_hinge").item() == pytest.approx(bce)


def test_lecam_anchors_and_penalty():
    """Anchors: EMA (decay 0.9) of the mean logits, from 0; penalty: mean((D(x) - a_fake)^2) + mean((D(x_hat) - a_real)^2)."""
    anchors = LeCamAnchors()
    real, fake = torch.tensor([1.0, 3.0]), torch.tensor([-1.0, -2.0])
    anchors.observe(real, fake, share=1.0)
    assert (anchors.real.item(), anchors.fake.item()) == (0.0, 0.0)  # nothing moves before the update is known finite
    anchors.commit(decay=0.9)
    assert (anchors.real.item(), anchors.fake.item()) == pytest.approx((0.2, -0.15))
    for half in range(2):  # two micro-batches of one accumulated batch: one move, by the batch's mean
        anchors.observe(real[half : half + 1], fake[half : half + 1], share=0.5)
    anchors.commit(decay=0.9)
    assert (anchors.real.item(), anchors.fake.item()) == pytest.approx((0.9 * 0.2 + 0.1 * 2.0, 0.9 * -0.15 + 0.1 * -1.5))
    by_hand = ((1 - anchors.fake) ** 2 + (3 - anchors.fake) ** 2) / 2 + ((-1 - anchors.real) ** 2 + (-2 - anchors.real) ** 2) / 2
    assert lecam_penalty(real, fake, anchors.real, anchors.fake).item() == pytest.approx(by_hand.item())
    assert set(anchors.state_dict()) == {"real", "fake"}  # saved in checkpoints
    anchors.observe(real * float("nan"), fake, share=1.0)
    anchors.discard()  # a skipped update's logits never reach the anchors
    anchors.commit(decay=0.9)
    assert torch.isfinite(anchors.real) and torch.isfinite(anchors.fake)


def test_r1_penalty_is_the_squared_input_gradient_norm():
    """D(x) = sum(w * x): the gradient w.r.t. each image is w, so R1 = ||w||^2."""
    weight = torch.randn(1, 3, 4, 4, requires_grad=True)
    images = torch.randn(2, 3, 4, 4, requires_grad=True)
    penalty = r1_penalty((weight * images).flatten(1).sum(1), images)
    assert penalty.item() == pytest.approx(weight.pow(2).sum().item(), rel=1e-6)
    penalty.backward()  # the graph is kept: the penalty trains the discriminator's weights
    torch.testing.assert_close(weight.grad, 2 * weight.detach() * 2 / 2)


def test_pooled_reconstruction_by_hand():
    target = torch.arange(16.0).view(1, 1, 4, 4) / 16
    reconstruction = torch.zeros(1, 1, 4, 4)
    blocks = [target[0, 0, i : i + 2, j : j + 2].mean() for i in (0, 2) for j in (0, 2)]  # 2x2 area means
    l1 = pooled_reconstruction_loss(target, reconstruction, factor=2, kind="l1", mask=False, reduction="mean")
    l2 = pooled_reconstruction_loss(target, reconstruction, factor=2, kind="l2", mask=False, reduction="mean")
    assert l1.item() == pytest.approx(sum(blocks) / 4) and l2.item() == pytest.approx(sum(b**2 for b in blocks) / 4)


def _mask_by_hand(images: torch.Tensor) -> torch.Tensor:
    """The reference's steps written out: ring-of-ones kernel, 13-tap Gaussian (sigma 2) with reflect padding."""
    kernel = torch.ones(5, 5)
    kernel[0, 0] = kernel[0, 4] = kernel[4, 0] = kernel[4, 4] = 0
    kernel[2, 2] = -20
    edges = F.conv2d(images.mean(1, keepdim=True), kernel.view(1, 1, 5, 5), padding=2).abs()
    taps = torch.exp(-((torch.arange(13.0) - 6) ** 2) / (2 * 2.0**2))
    taps = taps / taps.sum()
    edges = F.pad(edges, (6, 6, 6, 6), mode="reflect")
    edges = F.conv2d(F.conv2d(edges, taps.view(1, 1, 1, 13)), taps.view(1, 1, 13, 1))
    edges = (edges - edges.min()) / (edges.max() - edges.min() + 1e-8)
    flat = 1 - edges
    return torch.where(flat < 0.8, torch.zeros_like(flat), flat).repeat(1, images.shape[1], 1, 1)


def test_flat_region_mask_by_hand():
    torch.manual_seed(0)
    images = torch.zeros(2, 3, 24, 24)
    images[0, :, 8:16, 8:16] = 1.0  # a bright square: edges around it, flat inside and far away
    images[1] = torch.rand(3, 24, 24) * 0.1
    mask = flat_region_mask(images)
    torch.testing.assert_close(mask, _mask_by_hand(images), rtol=1e-5, atol=1e-5)
    assert mask[0, 0, 8, 8] == 0 and mask[0, 0, 0, 0] > 0.8  # an edge is masked out, a far corner kept
    assert torch.all((mask == 0) | (mask >= 0.8))
    flat = flat_region_mask(torch.full((1, 3, 48, 48), 0.3))
    # A flat image is kept, but for the reference's zero padding: its border reads as an edge (blurred 6 px in)
    assert torch.all(flat[..., 12:36, 12:36] == 1) and torch.all(flat[..., 0, :] == 0)


def test_masked_pooled_term_ignores_edges():
    target = torch.zeros(1, 3, 64, 64)
    target[:, :, 24:40, 24:40] = 1.0
    error_at_edge = target.clone()
    error_at_edge[:, :, 22:26, 22:26] += 0.5  # the square's corner: an edge after pooling by 2
    error_far = target.clone()
    error_far[:, :, 0:4, 0:4] += 0.5  # a flat corner

    def loss(r):
        return pooled_reconstruction_loss(target, r, factor=2, kind="l1", mask=True, reduction="mean")

    assert loss(error_at_edge).item() < 0.2 * loss(error_far).item()


def test_latent_penalty_replaces_kl_for_the_fixed_posterior():
    mean = torch.randn(2, 4, 3, 3, requires_grad=True)
    images = torch.rand(2, 3, 8, 8)
    reconstruction = images.clone().requires_grad_(True)
    config = LossConfig(perceptual_weight=0.0, kl_weight=0.1)
    output = generator_loss(images, reconstruction, mean, None, config=config, perceptual=None)
    assert "kl" not in output.terms and output.terms["latent_penalty"].item() == pytest.approx(mean.pow(2).mean().item())
    assert latent_penalty(mean).item() == pytest.approx(mean.pow(2).mean().item())
    (grad,) = torch.autograd.grad(output.backward_target, mean)
    torch.testing.assert_close(grad, 0.1 * 2 * mean.detach() / mean.numel())
