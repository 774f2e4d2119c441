"""The metrics of training validation and `vaetrain eval`: hand computations and reference implementations."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from skimage.metrics import structural_similarity

from vaetrain.data.decoding.pixels import PixelFormat
from vaetrain.evaluation import ReconstructionMetrics
from vaetrain.evaluation.metric_networks import build_inception


def smooth_images(count: int, size: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand(count, 3, size // 8, size // 8, generator=generator)
    return F.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False) * 2 - 1


def test_psnr_is_the_mean_of_per_image_psnr():
    target = torch.rand(4, 3, 16, 16) * 2 - 1
    noisy = (target + 0.1 * torch.randn_like(target)).clamp(-1, 1)
    metrics = ReconstructionMetrics()
    metrics.update(target[:3], noisy[:3])
    metrics.update(target[3:], noisy[3:])  # batches of any size
    mse = (((noisy + 1) / 2 - (target + 1) / 2) ** 2).flatten(1).mean(1)
    assert metrics.compute()["psnr"] == pytest.approx(float((10 * torch.log10(1 / mse)).mean()), abs=1e-4)


def test_ssim_matches_scikit_image():
    target = smooth_images(3, 64, seed=0)
    reconstruction = (target + 0.15 * torch.randn_like(target)).clamp(-1, 1)
    metrics = ReconstructionMetrics()
    metrics.update(target, reconstruction)
    reference = np.mean(
        [
            structural_similarity(
                ((t.permute(1, 2, 0).numpy() + 1) / 2).astype(np.float64),
                ((r.permute(1, 2, 0).numpy() + 1) / 2).astype(np.float64),
                data_range=1.0,
                channel_axis=-1,
                gaussian_weights=True,
                sigma=1.5,
                use_sample_covariance=False,
            )
            for t, r in zip(target, reconstruction)
        ]
    )
    assert abs(metrics.compute()["ssim"] - reference) < 1e-3


def test_metrics_inside_bf16_autocast_are_computed_in_fp32():
    """Validation runs under the training precision's autocast; the metrics must not (bf16 SSIM read 0.08
    low on a real run)."""
    target = smooth_images(3, 64, seed=0)
    reconstruction = (target + 0.15 * torch.randn_like(target)).clamp(-1, 1)
    plain, autocast = ReconstructionMetrics(), ReconstructionMetrics()
    plain.update(target, reconstruction)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        autocast.update(target, reconstruction)
    assert autocast.compute() == pytest.approx(plain.compute(), abs=1e-6)


def test_ms_ssim_uses_five_scales_and_is_none_for_small_images():
    target = smooth_images(2, 192, seed=1)
    metrics = ReconstructionMetrics(ms_ssim=True)
    metrics.update(target, target)
    assert metrics.compute()["ms_ssim"] == pytest.approx(1.0, abs=1e-5)
    metrics.update(target, (target + 0.3 * torch.randn_like(target)).clamp(-1, 1))
    assert metrics.compute()["ms_ssim"] < 0.99
    small = ReconstructionMetrics(ms_ssim=True)
    small.update(target[:, :, :64, :64], target[:, :, :64, :64])
    assert small.compute()["ms_ssim"] is None


def test_lpips_is_the_mean_of_what_the_caller_measured():
    metrics = ReconstructionMetrics()
    target = smooth_images(2, 32, seed=0)
    metrics.update(target, target, lpips=torch.tensor([0.2, 0.4]))
    metrics.update(target[:1], target[:1], lpips=torch.tensor([0.9]))
    assert metrics.compute()["lpips"] == pytest.approx(0.5)


@pytest.mark.slow  # 30 s of Inception on CPU; eval's rFID plumbing stays in test_evaluate.py
def test_rfid_of_a_set_against_itself_is_zero_and_against_another_set_larger():
    inception = build_inception("random")
    same = ReconstructionMetrics(fid_features=inception)
    images = smooth_images(24, 64, seed=0)
    same.update(images, images)
    other = ReconstructionMetrics(fid_features=inception)
    other.update(images, smooth_images(24, 64, seed=1).mul(0.5) + 0.4)  # dimmer, different content
    self_fid, other_fid = same.compute()["rfid"], other.compute()["rfid"]
    assert abs(self_fid) < 1e-3
    assert other_fid > 100 * max(abs(self_fid), 1e-4)


def test_colour_difference_is_ciede2000_and_bias_has_the_casts_sign():
    """Sharma, Wu and Dalal (2005), the CIEDE2000 test data, pair 1: Lab (50, 2.6772, -79.7751) vs
    (50, 0, -82.7485) is 2.0425; through the metric: identical images 0, a pure red shifted towards brown
    (less red) a negative red bias and a noticeable difference."""
    from skimage.color import deltaE_ciede2000

    from vaetrain.evaluation.colour import NOTICEABLE, channel_bias, delta_e_2000

    assert float(deltaE_ciede2000(torch.tensor([50.0, 2.6772, -79.7751]).numpy(), torch.tensor([50.0, 0.0, -82.7485]).numpy())) == pytest.approx(
        2.0425, abs=1e-4
    )
    red = torch.zeros(1, 3, 8, 8)
    red[:, 0] = 0.8
    brown = red.clone()
    brown[:, 0], brown[:, 1] = 0.55, 0.3
    assert delta_e_2000(red, red).item() == 0.0 and delta_e_2000(red, brown).item() > NOTICEABLE
    bias = channel_bias(red, brown)[0]
    assert bias[0].item() == pytest.approx(-0.25 * 255) and bias[1].item() == pytest.approx(0.3 * 255) and bias[2].item() == 0

    metrics = ReconstructionMetrics()
    metrics.update(red * 2 - 1, brown * 2 - 1)
    values = metrics.compute()
    assert values["delta_e"] == pytest.approx(delta_e_2000(red, brown).item()) and values["bias_c0"] == pytest.approx(-0.25 * 255, rel=1e-4)
    gray = ReconstructionMetrics(pixels=PixelFormat(channels=1))  # no colour on one channel, but its bias
    gray.update(torch.zeros(1, 1, 8, 8), torch.full((1, 1, 8, 8), 0.1))
    assert gray.compute()["delta_e"] is None and gray.compute()["bias_c0"] == pytest.approx(0.05 * 255, rel=1e-4)
