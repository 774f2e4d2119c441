"""The autoencoder's whole objective, as taming-transformers keeps it in one module: the generator's image
terms (reconstruction, LPIPS, pooled reconstruction) and adversarial term on the reconstruction, balanced
LDM's way (adaptive weight) or vqgan-training's (gradient normalisation), plus a latent regulariser (KL, or
mean(mu^2) for a fixed-variance posterior); and the discriminator's GAN loss (its regularisers are
training units that add their penalties: `training.features`).

A "mean" weight equals a "sum" weight times latent_elements / pixel_elements (c / (3 f^2) per image):
LDM's 1e-6 at f8c4 is 1e-6 * 4 / 192 = 2.1e-8 under "mean". Mixing a mean reconstruction with a summed
KL (as some trainers do) silently multiplies the KL weight by 3*H*W, e.g. 196,608 at 256 px.

Balancing works on gradients with respect to the reconstruction (see `generator_loss`). Under data
parallelism `Processes` averages the statistics over processes so that N processes compute what one
process would on the global batch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

import torch
from torch import nn

from vaetrain.frames import as_frames
from vaetrain.losses.config import LossConfig
from vaetrain.losses.gan import discriminator_loss, generator_adversarial_loss
from vaetrain.losses.terms import focal_frequency_term, kl_divergence, latent_penalty, pooled_reconstruction_loss, reconstruction_loss


@dataclass(frozen=True)
class Processes:
    """The data-parallel processes: how many, and how to average a tensor over them."""

    count: int
    mean: Callable[[torch.Tensor], torch.Tensor]


def adaptive_gan_weight(
    nll_grad: torch.Tensor,
    adversarial_grad: torch.Tensor,
    last_layer_grad: Callable[[torch.Tensor], torch.Tensor],
    max_weight: float,
    processes: Processes | None = None,
) -> torch.Tensor:
    """||d nll / d W|| / (||d adv / d W|| + 1e-4) at the decoder's last layer W, clamped to [0, max_weight]
    (LDM, ldm/modules/losses/contperceptual.py, `calculate_adaptive_weight`).

    Takes the two losses' gradients w.r.t. the reconstruction and maps each to W's gradient with
    `last_layer_grad` (the convolution's weight gradient computed directly, so no autograd pass runs
    through a DDP-, FSDP- or compile-wrapped autoencoder). In fp32. With several processes the two
    W-gradients are averaged over them first: the weight one process would compute on the global batch.
    """
    grads = [last_layer_grad(g.float()).float() for g in (nll_grad, adversarial_grad)]
    if processes is not None:
        grads = [processes.mean(g) for g in grads]
    nll_norm, adversarial_norm = (torch.linalg.vector_norm(g) for g in grads)
    return (nll_norm / (adversarial_norm + 1e-4)).clamp(0.0, max_weight).detach()


def global_norm(tensor: torch.Tensor, processes: Processes | None = None) -> torch.Tensor:
    """The L2 norm of a per-sample tensor over the whole global batch. Each process holds the gradient of
    its own batch mean, P times the global mean's gradient on its samples, so the global norm is
    sqrt(mean over processes of ||g_p||^2 / P)."""
    squared = tensor.float().pow(2).sum()
    if processes is None or processes.count == 1:
        return squared.sqrt()
    return (processes.mean(squared) / processes.count).sqrt()


class GradNorm(torch.autograd.Function):
    """Identity forward; backward scales the incoming gradient to L2 norm `weight` (vqgan-training
    vae_trainer.py, `GradNormFunction`, HEAD 379fe36: `weight * g / (||g|| + 1e-8)` with the norm over
    the whole tensor). Deviation: the reference averages the per-process norms over processes, which
    makes the normaliser depend on how the batch is split; `global_norm` gives every process the norm of
    the global batch's gradient, so 2 processes train like 1."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: float, processes: Processes | None) -> torch.Tensor:
        ctx.weight, ctx.processes = weight, processes
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        norm = global_norm(grad_output, ctx.processes)
        return ctx.weight * grad_output / (norm + 1e-8), None, None


def gradnorm(x: torch.Tensor, weight: float = 1.0, processes: Processes | None = None) -> torch.Tensor:
    """`x` unchanged, but the gradient that flows back through it has L2 norm `weight`."""
    return GradNorm.apply(x, weight, processes)


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
        pixels = float(target[0].numel()) if config.reduction == "sum" else 1.0  # LDM counts LPIPS once per pixel (of every frame)
        terms["perceptual"] = (config.perceptual_weight, pixels, lambda x: perceptual(as_frames(x), as_frames(target)).float().mean())
    if config.focal_frequency_weight > 0:
        frequency = partial(focal_frequency_term, target, alpha=config.focal_frequency_alpha, reduction=config.reduction)
        terms["focal_frequency"] = (config.focal_frequency_weight, 1.0, frequency)
    pooled = config.pooled_reconstruction
    if pooled.weight > 0:
        pooled_loss = partial(pooled_reconstruction_loss, target, factor=pooled.factor, kind=pooled.kind, mask=pooled.mask, reduction=config.reduction)
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
            weight = (
                gan_factor
                * config.disc_weight
                * adaptive_gan_weight(image_gradient, adversarial_gradient, last_layer_grad, config.adaptive_weight_max, processes)
            )
        else:
            weight = torch.tensor(gan_factor * config.disc_weight, device=leaf.device)
        total_gradient = total_gradient + weight * adversarial_gradient
        weighted["adversarial"] = (gan_factor * config.disc_weight if normalise else weight.detach(), adversarial.detach())
        adversarial_norm = (weight * adversarial_gradient).norm()
        terms |= {
            "adversarial": adversarial.detach(),
            "logits_fake": fake_logits.detach().float().mean(),
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


def discriminator_objective(real_logits: torch.Tensor, fake_logits: torch.Tensor, config: LossConfig) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The discriminator's GAN loss on one batch's logits and the values to log."""
    loss = discriminator_loss(real_logits, fake_logits, config.gan_loss)
    real, fake = real_logits.detach(), fake_logits.detach()
    real_accuracy, fake_accuracy = (real > 0).float().mean(), (fake < 0).float().mean()
    logs = {
        "train/discriminator": loss.detach(),
        "train/logits_real": real.mean(),
        "train/logits_fake_d": fake.mean(),
        "train/discriminator_accuracy": (real_accuracy + fake_accuracy) / 2,
        "train/discriminator_accuracy_real": real_accuracy,
        "train/discriminator_accuracy_fake": fake_accuracy,
        "train/logit_gap": real.mean() - fake.mean(),
    }
    return loss, logs
