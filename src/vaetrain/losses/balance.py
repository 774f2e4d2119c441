"""Balancing the generator's terms: LDM's adaptive GAN weight, and vqgan-training's gradient normalisation.

Both work on gradients with respect to the reconstruction (see `generator_loss`). Under data parallelism
`Processes` averages the statistics over processes so that N processes compute what one process would on
the global batch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch


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
