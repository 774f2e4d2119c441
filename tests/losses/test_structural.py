"""The weight-free terms against their references, by hand: Zhao et al.'s MS-SSIM + L1 as NVlabs/PL4NN's
`MSSSIML1.forward` computes it on one patch, and the focal frequency loss on spectra worked out by hand;
each on 1, 3 and 6 channels."""

import numpy as np
import pytest
import torch

from vaetrain.losses.structural import C1, C2, SIGMAS, ZHAO_ALPHA, focal_frequency_loss, ms_ssim_l1_map


def pl4nn_ms_ssim_l1(x: np.ndarray, y: np.ndarray, alpha: float) -> float:
    """NVlabs/PL4NN src/loss.py, MSSSIML1.forward, written out for one odd (C, W, W) patch (output x, label y)."""
    width = x.shape[-1]
    l_last, contrast = None, np.ones(x.shape[0])
    for sigma in SIGMAS:
        g = np.exp(-1.0 * np.arange(-(width // 2), width // 2 + 1) ** 2 / (2 * sigma**2))
        w = np.outer(g, g)
        w = w / w.sum()
        mux, muy = (w * x).sum(axis=(1, 2)), (w * y).sum(axis=(1, 2))
        sx, sy = (w * x**2).sum(axis=(1, 2)) - mux**2, (w * y**2).sum(axis=(1, 2)) - muy**2
        sxy = (w * x * y).sum(axis=(1, 2)) - mux * muy
        l_last = (2 * mux * muy + C1) / (mux**2 + muy**2 + C1)
        contrast = contrast * (2 * sxy + C2) / (sx + sy + C2)
    loss_msssim = 1 - (l_last * contrast).sum() / x.shape[0]
    loss_l1 = (np.abs(x - y) * w).sum() / x.shape[0]
    return alpha * loss_msssim + (1 - alpha) * loss_l1


@pytest.mark.parametrize("channels", [1, 3, 6])
def test_ms_ssim_l1_is_pl4nns_at_every_patch_centre(channels):
    torch.manual_seed(channels)
    y = torch.rand(1, channels, 33, 33, dtype=torch.float64)
    x = (y + 0.1 * torch.randn_like(y)).clamp(0, 1)
    ours = ms_ssim_l1_map(y, x)[0, :, 16, 16].double().mean().item()  # the 33 px window fits exactly at the centre
    assert ours == pytest.approx(pl4nn_ms_ssim_l1(x[0].numpy(), y[0].numpy(), ZHAO_ALPHA), rel=1e-4)
    assert ms_ssim_l1_map(y, y).abs().max() < 1e-5 and ms_ssim_l1_map(y, x).shape == y.shape


@pytest.mark.parametrize("channels", [1, 3, 6])
def test_focal_frequency_loss_by_hand(channels):
    """2x2 images, orthonormal DFT: a single bright pixel has the flat spectrum 1/2 everywhere (distance 1/4,
    weight 1): loss 1/4; a bright top row has the spectrum [[1, 0], [1, 0]] (distance 1 at two of four
    frequencies, weight 1 there): loss 1/2; alpha changes nothing when all weights are 0 or 1."""
    target = torch.zeros(2, channels, 2, 2)
    pixel, row = target.clone(), target.clone()
    pixel[..., 0, 0] = 1.0
    row[..., 0, :] = 1.0
    assert focal_frequency_loss(target, pixel).item() == pytest.approx(0.25)
    assert focal_frequency_loss(target, row).item() == pytest.approx(0.5)
    assert focal_frequency_loss(target, row, alpha=2.0).item() == pytest.approx(0.5)
    assert focal_frequency_loss(target, target).item() == 0.0


def test_focal_frequency_weights_the_worst_frequencies_and_passes_no_gradient_through_them():
    """A spectrum error of 2 at one frequency and 1 at another: weights 1 and 1/2 (alpha 1), so the loss is
    (1 x 4 + 1/2 x 1) / 4 elements; the weight matrix is detached (the gradient is that of weight x distance)."""
    target = torch.zeros(1, 1, 2, 2)
    spectrum = torch.tensor([[2.0, 1.0], [0.0, 0.0]], dtype=torch.complex64)
    reconstruction = torch.fft.ifft2(spectrum, norm="ortho").real.view(1, 1, 2, 2).requires_grad_(True)
    loss = focal_frequency_loss(target, reconstruction)
    assert loss.item() == pytest.approx((4 + 0.5) / 4)
    loss.backward()
    leaf = reconstruction.detach().requires_grad_(True)
    weighted = (torch.tensor([[1.0, 0.5], [0.0, 0.0]]) * torch.fft.fft2(leaf, norm="ortho").abs() ** 2).mean()
    (expected,) = torch.autograd.grad(weighted, leaf)
    assert torch.allclose(reconstruction.grad, expected, atol=1e-6)


def test_ms_ssim_l1_is_computed_in_32_bits_under_mixed_precision():
    """Under bf16 autocast the Gaussian filters ran in bf16: E[x^2] - E[x]^2 went negative beside C2 = 9e-4 and
    the race's ms_ssim_l1 run died of non-finite gradients at the GAN's start. The map must not depend on it."""
    generator = torch.Generator().manual_seed(0)
    target = torch.rand(2, 3, 40, 40, generator=generator)
    reconstruction = (target + 0.05 * torch.randn(target.shape, generator=generator)).clamp(0, 1).requires_grad_()
    exact = ms_ssim_l1_map(target, reconstruction)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = ms_ssim_l1_map(target, reconstruction)
    assert mixed.dtype == torch.float32
    torch.testing.assert_close(mixed, exact, rtol=0, atol=1e-6)
    (gradient,) = torch.autograd.grad(mixed.mean(), reconstruction)
    assert torch.isfinite(gradient).all()
