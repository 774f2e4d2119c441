"""Adversarial losses and discriminator regularisers on discriminator logits (a PatchGAN's map or a
VGG discriminator's patch vector). Every loss averages over all logits of the batch, in fp32."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

GanLossKind = Literal["hinge", "vanilla", "non_saturating", "thresholded_hinge"]


def discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor, kind: GanLossKind) -> torch.Tensor:
    """0.5 * (loss on real + loss on fake). `hinge`: LDM's; the others train the discriminator with binary
    cross-entropy (vqgan-training's `gan_disc_loss` with `disc_type="bce"` for `thresholded_hinge`)."""
    real, fake = real_logits.float(), fake_logits.float()
    if kind == "hinge":
        return 0.5 * (F.relu(1.0 - real).mean() + F.relu(1.0 + fake).mean())
    if kind in ("vanilla", "non_saturating", "thresholded_hinge"):
        return 0.5 * (F.softplus(-real).mean() + F.softplus(fake).mean())
    raise ValueError(f"unknown GAN loss {kind!r}")


def generator_adversarial_loss(fake_logits: torch.Tensor, kind: GanLossKind, real_logits: torch.Tensor | None = None, margin: float = 0.1) -> torch.Tensor:
    """The autoencoder's adversarial term.

    hinge: -mean(D(x̂)) (LDM/taming); vanilla: the saturating minimax form mean(log(1 - sigmoid(D(x̂))));
    non_saturating: -mean(log sigmoid(D(x̂))); thresholded_hinge: mean(relu(D(x) - D(x̂) - margin)) with
    the real logits detached (vqgan-training v0.2 521df37, vae_trainer.py: `(real_preds_const -
    fake_preds - 0.1).relu().mean()`): the generator is pushed only where the discriminator tells a
    reconstruction from its original by more than `margin`.
    """
    fake = fake_logits.float()
    if kind == "hinge":
        return -fake.mean()
    if kind == "vanilla":
        return -F.softplus(fake).mean()
    if kind == "non_saturating":
        return F.softplus(-fake).mean()
    if kind == "thresholded_hinge":
        if real_logits is None:
            raise ValueError("thresholded_hinge needs the discriminator's logits on the real images")
        return F.relu(real_logits.detach().float() - fake - margin).mean()
    raise ValueError(f"unknown GAN loss {kind!r}")


def r1_penalty(real_logits: torch.Tensor, real_images: torch.Tensor) -> torch.Tensor:
    """E[||d sum(D(x)) / d x||^2] over the real images, with the graph kept so the penalty trains the
    discriminator (StyleGAN2-ADA training/loss.py, `StyleGAN2Loss.accumulate_gradients`, phase Dr1:
    `r1_grads.square().sum([1,2,3])`; the caller multiplies by gamma / 2 and the lazy interval)."""
    (gradient,) = torch.autograd.grad(real_logits.float().sum(), real_images, create_graph=True)
    return gradient.float().pow(2).flatten(1).sum(dim=1).mean()
