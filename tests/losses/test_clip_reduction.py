"""`model.loss.reduction` on clips: one rule for every term (losses/terms.py). Under `sum` every term is
summed over a sample's elements, a clip's frames included, and averaged over the batch (so on a clip it is
the sum of the term on each of its frames); under `mean` every term is averaged (the mean over the frames)."""

import pytest
import torch

from vaetrain.losses import LossConfig, kl_divergence
from vaetrain.losses.config import PooledReconstruction
from vaetrain.losses.objective import image_terms
from vaetrain.losses.structural import focal_frequency_loss


def _config(kind: str, reduction: str, mask: bool = False) -> LossConfig:
    pooled = PooledReconstruction(weight=1.0, factor=2, kind="l1", mask=mask)
    return LossConfig(reconstruction=kind, reduction=reduction, perceptual_weight=1.0, focal_frequency_weight=1.0, pooled_reconstruction=pooled)


def _terms(target: torch.Tensor, reconstruction: torch.Tensor, config: LossConfig, perceptual) -> dict[str, float]:
    """Each image term as the objective weighs it (its value times the reduction rule's scale)."""
    with torch.no_grad():
        return {name: scale * loss(reconstruction).item() for name, (_, scale, loss) in image_terms(target, config, perceptual).items()}


def _clips(frames: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    target = torch.rand(2, 3, frames, 24, 24, generator=generator) * 2 - 1
    return target, (target + 0.3 * torch.randn(target.shape, generator=generator)).clamp(-1, 1)


@pytest.mark.parametrize("kind", ["l1", "l2", "ms_ssim_l1"])
def test_every_term_of_a_clip_is_the_sum_or_mean_of_its_frames_terms(random_lpips, kind):
    target, reconstruction = _clips(3)
    mean, logvar = torch.randn(2, 4, 2, 6, 6), torch.randn(2, 4, 2, 6, 6) * 0.5
    for reduction, divisor in (("sum", 1), ("mean", 3)):
        config = _config(kind, reduction)
        clip = _terms(target, reconstruction, config, random_lpips)
        frames = [_terms(target[:, :, t], reconstruction[:, :, t], config, random_lpips) for t in range(3)]
        assert set(clip) == {"reconstruction", "perceptual", "focal_frequency", "pooled_reconstruction"}
        for name, value in clip.items():
            assert value == pytest.approx(sum(frame[name] for frame in frames) / divisor, rel=1e-5), (reduction, name)
        per_frame = [kl_divergence(mean[:, :, t], logvar[:, :, t], reduction).item() for t in range(2)]
        assert kl_divergence(mean, logvar, reduction).item() == pytest.approx(sum(per_frame) / (1 if reduction == "sum" else 2), rel=1e-5)


@pytest.mark.parametrize("kind", ["l1", "ms_ssim_l1"])
def test_a_clip_twice_as_long_weighs_every_term_twice_under_sum_and_the_same_under_mean(random_lpips, kind):
    """The clip with each frame repeated (the flat-region mask on: it normalises over the whole batch)."""
    target, reconstruction = _clips(2, seed=1)
    longer_target, longer_reconstruction = target.repeat_interleave(2, dim=2), reconstruction.repeat_interleave(2, dim=2)
    for reduction, ratio in (("sum", 2.0), ("mean", 1.0)):
        config = _config(kind, reduction, mask=True)
        short, long = _terms(target, reconstruction, config, random_lpips), _terms(longer_target, longer_reconstruction, config, random_lpips)
        assert {name: long[name] / short[name] for name in short} == pytest.approx(dict.fromkeys(short, ratio), rel=1e-5), reduction


def test_the_focal_frequency_term_follows_the_reduction_on_images():
    """The reference's mean under `mean`; under `sum`, summed over each image's spectrum (one frequency per
    pixel and channel, as the pixel terms sum pixels) and averaged over the batch."""
    target, reconstruction = (t[:, :, 0] for t in _clips(1, seed=2))
    reference = focal_frequency_loss(target, reconstruction).item()
    for reduction, scale in (("mean", 1.0), ("sum", 3 * 24 * 24)):
        config = LossConfig(reduction=reduction, perceptual_weight=0.0, focal_frequency_weight=1.0)
        assert _terms(target, reconstruction, config, None)["focal_frequency"] == pytest.approx(reference * scale, rel=1e-5), reduction
