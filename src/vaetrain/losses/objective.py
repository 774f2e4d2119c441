"""The autoencoder's objective: image terms (reconstruction, LPIPS, pooled reconstruction) and the
adversarial term on the reconstruction, balanced LDM's way (adaptive weight) or vqgan-training's
(gradient normalisation), plus a latent regulariser (KL, or mean(mu^2) for a fixed-variance posterior).

A "mean" weight equals a "sum" weight times latent_elements / pixel_elements (c / (3 f^2) per image):
LDM's 1e-6 at f8c4 is 1e-6 * 4 / 192 = 2.1e-8 under "mean". Mixing a mean reconstruction with a summed
KL (as some trainers do) silently multiplies the KL weight by 3*H*W, e.g. 196,608 at 256 px.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import nn

from vaetrain.errors import ConfigError
from vaetrain.losses.alignment import AlignmentConfig
from vaetrain.losses.balance import Processes, adaptive_gan_weight, gradnorm
from vaetrain.losses.distillation import DistillationConfig
from vaetrain.losses.equivariance import EquivarianceConfig
from vaetrain.losses.gan import GanLossKind, generator_adversarial_loss
from vaetrain.losses.perceptual import Backbone, PerceptualNetwork, TripletSetting
from vaetrain.losses.terms import PixelLoss, Reduction, kl_divergence, latent_penalty, pooled_reconstruction_loss, reconstruction_loss


@dataclass(frozen=True)
class PooledReconstruction:
    """vqgan-training's low-pass reconstruction term (see `terms.pooled_reconstruction_loss`)."""

    weight: float = 0.0
    """Weight of the pooled term; 0 switches it off (vqgan-training v0.2: 0.5)."""
    factor: int = 4
    """Area-downsampling factor of input and reconstruction before comparing them (v0.2: 4; HEAD: 16)."""
    kind: PixelLoss = "l1"
    """l1 (the reference) or l2 (squared error)."""
    mask: bool = False
    """Compare flat regions only: multiply by the reference's flat-region mask of the pooled input."""


@dataclass(frozen=True)
class LossConfig:
    """Every term's weight and how the terms are balanced. Step settings count generator optimizer steps."""

    reconstruction: PixelLoss = "l1"
    """Pixel loss: l1 or l2 (squared error)."""
    reduction: Reduction = "mean"
    """mean: averages (weights independent of size); sum: LDM's per-image sums (LDM's kl_weight 1e-6 means the same)."""
    reconstruction_weight: float = 1.0
    """Weight of the pixel loss (under gradnorm: the norm its gradient is scaled to; vqgan-training: 0.001)."""
    perceptual_weight: float = 1.0
    """Weight of LPIPS; 0 switches it off (and saves its forward and backward)."""
    perceptual_network: PerceptualNetwork = "vgg"
    """LPIPS backbone: vgg (LDM), alex or squeeze."""
    perceptual_backbone: Backbone = "pretrained"
    """pretrained: ImageNet weights (needs the file); random: untrained, for offline runs and tests."""
    perceptual_channels: TripletSetting = None
    """Images that are not RGB: the channel triplets LPIPS compares, averaged (e.g. [[0, 1, 2], [3, 4, 5]]),
    or `each` (every channel replicated to RGB); null: RGB as it is, 1 channel replicated."""
    pooled_reconstruction: PooledReconstruction = field(default_factory=PooledReconstruction)
    """The low-pass (pooled, optionally flat-region-masked) reconstruction term."""
    kl_weight: float = 1e-6
    """Weight of the KL term, or of mean(mu^2) with a fixed-variance posterior (vqgan-training: 0.1)."""
    sample_posterior: bool = True
    """Decode a posterior sample (or, fixed posterior, mu with multiplicative noise); false: the mean."""
    gan_loss: GanLossKind = "hinge"
    """hinge (LDM); vanilla or non_saturating (BCE); thresholded_hinge (generator: relu(D(x) - D(x̂) - gan_margin), discriminator: BCE)."""
    gan_margin: float = 0.1
    """Margin of thresholded_hinge."""
    disc_weight: float = 0.5
    """Weight of the adversarial term (adaptive: times the adaptive weight; gradnorm: its gradient's norm)."""
    disc_start_step: int = 50001
    """Generator step at which the discriminator starts training."""
    disc_warmup_steps: int = 0
    """The discriminator trains alone this many steps from disc_start_step, then the adversarial weight ramps
    linearly from 0 to 1 over as many steps (0: the whole term at disc_start_step, LDM's step change)."""
    balance: Literal["adaptive", "fixed", "gradnorm"] = "adaptive"
    """adaptive: LDM's adaptive GAN weight; fixed: disc_weight as it is; gradnorm: every term's gradient
    w.r.t. the reconstruction scaled to its weight (vqgan-training)."""
    adaptive_weight_max: float = 1e4
    """Upper clamp of the adaptive weight (LDM: 1e4)."""
    lecam_weight: float = 0.0
    """Weight of LeCam regularisation of the discriminator; 0 switches it off (vqgan-training: 0.1)."""
    lecam_decay: float = 0.9
    """Decay of LeCam's anchors (moving averages of the mean real and fake logits)."""
    r1_weight: float = 0.0
    """R1 gradient penalty gamma on real images; 0 switches it off."""
    r1_every: int = 16
    """R1 is computed every this many discriminator steps and scaled by it (lazy regularisation)."""
    equivariance: EquivarianceConfig = field(default_factory=EquivarianceConfig)
    """EQ-VAE: decode downscaled and rotated latents, compared with the images transformed alike."""
    alignment: AlignmentConfig = field(default_factory=AlignmentConfig)
    """VA-VAE: align the (projected) latent with a frozen vision encoder's patch features."""
    latent_noise: float = 0.0
    """The decoder reads z + sigma x std(z) x eps, sigma ~ U(0, latent_noise) per image (0: off)."""
    distillation: DistillationConfig = field(default_factory=DistillationConfig)
    """Imitate a teacher VAE (`vaetrain distill`): encoder to its scaled latents, decoder from them."""

    def __post_init__(self) -> None:
        pooled = self.pooled_reconstruction
        if pooled.factor < 1:
            raise ConfigError(f"model.loss.pooled_reconstruction.factor must be >= 1, got {pooled.factor}")
        if self.disc_warmup_steps < 0:
            raise ConfigError(f"model.loss.disc_warmup_steps must be >= 0, got {self.disc_warmup_steps}")
        if not 0.0 <= self.lecam_decay < 1.0:
            raise ConfigError(f"model.loss.lecam_decay must be in [0, 1), got {self.lecam_decay}")
        if self.latent_noise < 0:
            raise ConfigError(f"model.loss.latent_noise must be >= 0, got {self.latent_noise}")
        if self.r1_every < 1:
            raise ConfigError(f"model.loss.r1_every must be >= 1, got {self.r1_every}")
        for name in ("reconstruction_weight", "perceptual_weight", "kl_weight", "disc_weight", "lecam_weight", "r1_weight"):
            if getattr(self, name) < 0:
                raise ConfigError(f"model.loss.{name} must be >= 0, got {getattr(self, name)}")


@dataclass
class GeneratorLossOutput:
    """`backward_target` has the total loss's gradient w.r.t. the autoencoder; `terms` are detached, for logs."""

    backward_target: torch.Tensor
    total: torch.Tensor
    terms: dict[str, torch.Tensor] = field(default_factory=dict)


def gan_ramp(step: int, start: int, warmup: int) -> float:
    """The adversarial term's factor at generator step `step`: 0 before `start` + `warmup` (the discriminator
    trains alone from `start`), then rising by 1/warmup per step to 1; with no warm-up, 0 then 1 at `start`."""
    if warmup == 0:
        return 1.0 if step >= start else 0.0
    return min(1.0, max(0.0, (step - start - warmup + 1) / warmup))


def image_terms(target: torch.Tensor, config: LossConfig, perceptual: nn.Module | None) -> dict[str, tuple[float, float, Callable]]:
    """name -> (weight, scale under the reduction rule, function of the reconstruction) for every active term."""
    terms = {"reconstruction": (config.reconstruction_weight, 1.0, lambda x: reconstruction_loss(target, x, config.reconstruction, config.reduction))}
    if perceptual is not None and config.perceptual_weight > 0:
        pixels = float(target[0].numel()) if config.reduction == "sum" else 1.0  # LDM counts LPIPS once per pixel
        terms["perceptual"] = (config.perceptual_weight, pixels, lambda x: perceptual(x, target).float().mean())
    pooled = config.pooled_reconstruction
    if pooled.weight > 0:
        pooled_loss = lambda x: pooled_reconstruction_loss(  # noqa: E731
            target, x, factor=pooled.factor, kind=pooled.kind, mask=pooled.mask, reduction=config.reduction
        )
        terms["pooled_reconstruction"] = (pooled.weight, 1.0, pooled_loss)
    return {name: term for name, term in terms.items() if term[0] > 0}


def generator_loss(
    inputs: torch.Tensor,
    reconstruction: torch.Tensor,
    posterior_mean: torch.Tensor,
    posterior_logvar: torch.Tensor | None,
    *,
    config: LossConfig,
    perceptual: nn.Module | None,
    last_layer_grad: Callable[[torch.Tensor], torch.Tensor] | None = None,
    discriminator: nn.Module | None = None,
    processes: Processes | None = None,
    gan_factor: float = 1.0,
) -> GeneratorLossOutput:
    """The autoencoder's loss for one batch; the adversarial term only when `discriminator` is given.

    The image terms and the discriminator run once on a detached copy (leaf) of the reconstruction; their
    gradients w.r.t. it are balanced (adaptive weight, fixed, or gradnorm) and sent into the autoencoder
    by one backward of `backward_target`, with the latent regulariser's gradient (KL; mean(mu^2) when
    `posterior_logvar` is None, the fixed-variance posterior). The discriminator receives no gradient:
    only the copy's gradient is asked for. A non-finite gradient here reaches the autoencoder's gradient
    too, and the training step then skips the update (see `GanStep.prepare_gradients`). `gan_factor`
    scales the adversarial term (the discriminator warm-up's ramp, `gan_ramp`). `terms["adversarial_share"]`
    is ||adversarial gradient|| / (||image terms' gradient|| + ||adversarial gradient||) at the reconstruction.
    """
    leaf = reconstruction.detach().float().requires_grad_(True)
    terms: dict[str, torch.Tensor] = {}
    weighted: dict[str, tuple[float, torch.Tensor]] = {}
    gradients: dict[str, torch.Tensor] = {}
    normalise = config.balance == "gradnorm"
    for name, (weight, scale, loss) in image_terms(inputs.float(), config, perceptual).items():
        value = loss(gradnorm(leaf, weight, processes) if normalise else leaf)
        (gradients[name],) = torch.autograd.grad(value if normalise else weight * scale * value, leaf)
        terms[name], weighted[name] = value.detach(), (weight * scale, value.detach())
    image_gradient = sum(gradients.values(), torch.zeros_like(leaf))
    total_gradient = image_gradient

    if discriminator is not None:
        real_logits = None
        if config.gan_loss == "thresholded_hinge":
            with torch.no_grad():
                real_logits = discriminator(inputs)
        fake_logits = discriminator(gradnorm(leaf, config.disc_weight * gan_factor, processes) if normalise else leaf)
        adversarial = generator_adversarial_loss(fake_logits, config.gan_loss, real_logits, config.gan_margin)
        (adversarial_gradient,) = torch.autograd.grad(adversarial, leaf)
        if normalise:
            weight = torch.tensor(1.0, device=leaf.device)  # the gradient already has norm disc_weight
        elif config.balance == "adaptive":
            if last_layer_grad is None:
                raise ValueError("generator_loss: the adaptive weight needs last_layer_grad")
            weight = gan_factor * config.disc_weight * adaptive_gan_weight(image_gradient, adversarial_gradient, last_layer_grad, config.adaptive_weight_max, processes)
        else:
            weight = torch.tensor(gan_factor * config.disc_weight, device=leaf.device)
        total_gradient = total_gradient + weight * adversarial_gradient
        weighted["adversarial"] = (gan_factor * config.disc_weight if normalise else weight.detach(), adversarial.detach())
        adversarial_norm = (weight * adversarial_gradient).norm()
        terms |= {
            "adversarial": adversarial.detach(), "logits_fake": fake_logits.detach().float().mean(),
            "adversarial_share": (adversarial_norm / (image_gradient.norm() + adversarial_norm + 1e-12)).detach(),
        }
        if not normalise:
            terms["adaptive_weight"] = weight.detach()

    if posterior_logvar is None:
        name, regulariser = "latent_penalty", latent_penalty(posterior_mean)
    else:
        name, regulariser = "kl", kl_divergence(posterior_mean, posterior_logvar, config.reduction)
    terms[name] = regulariser.detach()
    total = sum(w * v for w, v in weighted.values()) + config.kl_weight * regulariser.detach()
    terms["total"] = total
    backward_target = (reconstruction.float() * total_gradient).sum() + config.kl_weight * regulariser
    return GeneratorLossOutput(backward_target=backward_target, total=total, terms=terms)
