"""The autoencoder's objective and its one reduction rule.

`reduction` applies to every term at once, so `kl_weight` keeps one meaning:
- "mean" (default): reconstruction averaged over pixels, LPIPS over images, KL over latent elements.
  Weights do not depend on resolution or latent size.
- "sum": LDM's `LPIPSWithDiscriminator`: reconstruction and KL summed over each image's elements and
  LPIPS counted once per pixel, then averaged over the batch. LDM's `kl_weight=1e-6` means the same here.

A "mean" weight equals a "sum" weight times latent_elements / pixel_elements (c / (3 f^2) per image):
LDM's 1e-6 at f8c4 is 1e-6 * 4 / 192 = 2.1e-8 under "mean". Mixing a mean reconstruction with a summed
KL (as some trainers do) silently multiplies the KL weight by 3*H*W, e.g. 196,608 at 256 px.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution
from torch import nn

from vaetrain.losses.gan import GanLossKind, generator_adversarial_loss
from vaetrain.losses.perceptual import Backbone, PerceptualNetwork

Reduction = Literal["mean", "sum"]


@dataclass(frozen=True)
class LossConfig:
    """Weights of every term. `disc_start_step` counts generator optimizer steps."""

    reconstruction: Literal["l1", "l2"] = "l1"
    reduction: Reduction = "mean"
    reconstruction_weight: float = 1.0
    perceptual_weight: float = 1.0
    perceptual_network: PerceptualNetwork = "vgg"
    perceptual_backbone: Backbone = "pretrained"
    kl_weight: float = 1e-6
    sample_posterior: bool = True
    gan_loss: GanLossKind = "hinge"
    disc_weight: float = 0.5
    disc_start_step: int = 50001
    adaptive_weight: bool = True
    adaptive_weight_max: float = 1e4


@dataclass
class GeneratorLossOutput:
    """`backward_target` has the total loss's gradient w.r.t. the autoencoder; `terms` are detached, for logs."""

    backward_target: torch.Tensor
    total: torch.Tensor
    terms: dict[str, torch.Tensor] = field(default_factory=dict)


def reconstruction_loss(
    target: torch.Tensor, reconstruction: torch.Tensor, kind: Literal["l1", "l2"], reduction: Reduction
) -> torch.Tensor:
    """L1 or squared error, in fp32, reduced by the objective's rule."""
    loss_fn = F.l1_loss if kind == "l1" else F.mse_loss
    per_element = loss_fn(reconstruction.float(), target.float(), reduction="none")
    return _reduce(per_element, reduction)


def kl_divergence(mean: torch.Tensor, logvar: torch.Tensor, reduction: Reduction) -> torch.Tensor:
    """KL(q(z|x) || N(0, I)) in fp32, using diffusers' posterior (which clamps logvar to [-30, 20])."""
    posterior = DiagonalGaussianDistribution(torch.cat([mean.float(), logvar.float()], dim=1))
    per_image_sum = posterior.kl()
    if reduction == "sum":
        return per_image_sum.mean()
    return per_image_sum.mean() / mean[0].numel()


def adaptive_gan_weight(
    nll_grad: torch.Tensor,
    adversarial_grad: torch.Tensor,
    last_layer_grad: Callable[[torch.Tensor], torch.Tensor],
    max_weight: float,
    mean_over_processes: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """||d nll / d W|| / (||d adv / d W|| + 1e-4) at the decoder's last layer W, clamped to [0, max_weight].

    Takes the two losses' gradients w.r.t. the reconstruction and maps each to W's gradient with
    `last_layer_grad` (see `LastLayerInput`: the convolution's weight gradient computed directly, so no
    autograd pass runs through a DDP-, FSDP- or compile-wrapped autoencoder): the same numbers as LDM's
    `calculate_adaptive_weight` without a second pass through LPIPS and the discriminator. In fp32. Under
    data parallelism `mean_over_processes` averages the two gradients over all processes first, so every
    rank uses the weight one process would compute on the whole global batch.
    """
    grads = [last_layer_grad(g.float()).float() for g in (nll_grad, adversarial_grad)]
    if mean_over_processes is not None:
        grads = [mean_over_processes(g) for g in grads]
    nll_norm, adversarial_norm = (torch.linalg.vector_norm(g) for g in grads)
    return (nll_norm / (adversarial_norm + 1e-4)).clamp(0.0, max_weight).detach()


def generator_loss(
    inputs: torch.Tensor,
    reconstruction: torch.Tensor,
    posterior_mean: torch.Tensor,
    posterior_logvar: torch.Tensor,
    *,
    config: LossConfig,
    perceptual: nn.Module | None,
    last_layer_grad: Callable[[torch.Tensor], torch.Tensor] | None = None,
    discriminator: nn.Module | None = None,
    mean_over_processes: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> GeneratorLossOutput:
    """The autoencoder's loss for one batch; the adversarial term only when `discriminator` is given.

    LPIPS and the discriminator run once on a detached copy of the reconstruction; their gradients are
    combined (with the adaptive weight) and sent into the autoencoder by one backward of
    `backward_target`. The discriminator receives no gradient: only the copy's gradient is asked for.
    A non-finite adaptive weight comes from a non-finite gradient, which reaches `backward_target`'s
    gradient too: the training step then skips the update (see `GanStep.prepare_gradients`).
    """
    leaf = reconstruction.detach().float().requires_grad_(True)
    target = inputs.float()

    rec = reconstruction_loss(target, leaf, config.reconstruction, config.reduction)
    nll = config.reconstruction_weight * rec
    terms: dict[str, torch.Tensor] = {"reconstruction": rec.detach()}
    if perceptual is not None and config.perceptual_weight > 0:
        per_image = perceptual(leaf, target).float()
        pixels_per_image = leaf[0].numel() if config.reduction == "sum" else 1
        perceptual_term = per_image.mean() * pixels_per_image
        nll = nll + config.perceptual_weight * perceptual_term
        terms["perceptual"] = per_image.mean().detach()
    (nll_grad,) = torch.autograd.grad(nll, leaf)
    total_grad = nll_grad
    total = nll.detach()

    if discriminator is not None:
        logits = discriminator(leaf)
        adversarial = generator_adversarial_loss(logits, config.gan_loss)
        (adversarial_grad,) = torch.autograd.grad(adversarial, leaf)
        if config.adaptive_weight:
            if last_layer_grad is None:
                raise ValueError("generator_loss: the adaptive weight needs last_layer_grad")
            weight = adaptive_gan_weight(nll_grad, adversarial_grad, last_layer_grad, config.adaptive_weight_max, mean_over_processes)
            weight = weight * config.disc_weight
        else:
            weight = torch.tensor(config.disc_weight, device=leaf.device)
        total_grad = total_grad + weight * adversarial_grad
        total = total + weight * adversarial.detach()
        terms |= {
            "adversarial": adversarial.detach(),
            "adaptive_weight": weight.detach(),
            "logits_fake": logits.detach().float().mean(),
        }

    kl = kl_divergence(posterior_mean, posterior_logvar, config.reduction)
    terms["kl"] = kl.detach()
    total = total + config.kl_weight * kl.detach()
    terms["total"] = total
    backward_target = (reconstruction.float() * total_grad).sum() + config.kl_weight * kl
    return GeneratorLossOutput(backward_target=backward_target, total=total, terms=terms)


def _reduce(per_element: torch.Tensor, reduction: Reduction) -> torch.Tensor:
    if reduction == "sum":
        return per_element.flatten(1).sum(dim=1).mean()
    return per_element.mean()

