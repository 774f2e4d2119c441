"""Losses as pure functions returning tensors or dataclasses: the LDM objective (reconstruction + LPIPS +
KL + adversarial, with the adaptive GAN weight), the GAN losses and the frozen LPIPS network.

May import: `vaetrain.errors` and third-party packages only (never models, data, evaluation, training,
export or the command line).
"""

from vaetrain.losses.gan import GanLossKind, discriminator_loss, generator_adversarial_loss
from vaetrain.losses.objective import (
    GeneratorLossOutput,
    LossConfig,
    adaptive_gan_weight,
    generator_loss,
    kl_divergence,
    reconstruction_loss,
)
from vaetrain.losses.perceptual import PerceptualLoss, PretrainedWeightsUnavailable, build_perceptual_loss

__all__ = [
    "GanLossKind",
    "GeneratorLossOutput",
    "LossConfig",
    "PerceptualLoss",
    "PretrainedWeightsUnavailable",
    "adaptive_gan_weight",
    "build_perceptual_loss",
    "discriminator_loss",
    "generator_adversarial_loss",
    "generator_loss",
    "kl_divergence",
    "reconstruction_loss",
]
