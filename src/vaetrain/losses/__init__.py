"""The training objective and its parts: loss functions (returning tensors or dataclasses) and the modules
that hold state or weights. The image and latent terms (`terms`, `structural`), the GAN losses and
discriminator regularisers (`gan`, with LeCam's running anchors as a module), the whole objective of both
networks with its balancing (`objective`: LDM's adaptive weight, vqgan-training's gradient normalisation),
its settings (`config`), the frozen LPIPS network (`perceptual`, an `nn.Module`), and the alignment,
distillation and equivariance losses.

May import: `vaetrain.errors` and third-party packages only (never models, data, checkpoints, evaluation,
training, export or the command line).
"""

from vaetrain.errors import PretrainedWeightsUnavailable
from vaetrain.losses.config import LossConfig, PooledReconstruction
from vaetrain.losses.gan import GanLossKind, LeCamAnchors, discriminator_loss, generator_adversarial_loss, lecam_penalty, r1_penalty
from vaetrain.losses.objective import (
    GeneratorLossOutput,
    GradNorm,
    Processes,
    adaptive_gan_weight,
    discriminator_objective,
    generator_loss,
    global_norm,
    gradnorm,
    image_terms,
)
from vaetrain.losses.perceptual import PerceptualLoss, build_perceptual_loss
from vaetrain.losses.terms import flat_region_mask, kl_divergence, latent_penalty, pooled_reconstruction_loss, reconstruction_loss

__all__ = [
    "GanLossKind",
    "GeneratorLossOutput",
    "GradNorm",
    "LeCamAnchors",
    "LossConfig",
    "PerceptualLoss",
    "PooledReconstruction",
    "PretrainedWeightsUnavailable",
    "Processes",
    "adaptive_gan_weight",
    "build_perceptual_loss",
    "discriminator_loss",
    "discriminator_objective",
    "flat_region_mask",
    "generator_adversarial_loss",
    "generator_loss",
    "global_norm",
    "gradnorm",
    "image_terms",
    "kl_divergence",
    "latent_penalty",
    "lecam_penalty",
    "pooled_reconstruction_loss",
    "r1_penalty",
    "reconstruction_loss",
]
