"""Adversarial losses and discriminator regularisers on discriminator logits (a PatchGAN's map or a
VGG discriminator's patch vector). Every loss averages over all logits of the batch, in fp32."""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

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


class LeCamAnchors(nn.Module):
    """The exponential moving averages of the discriminator's mean real and fake logits that LeCam
    regularisation pulls towards (buffers: saved in checkpoints, restored on resume).

    Per micro-batch `observe` adds its share of the accumulated batch's mean logits; once the
    discriminator's update is known to be finite, `commit` moves the anchors (once per optimizer step),
    after a skipped update `discard` forgets them: a non-finite batch never reaches the anchors.
    Deviation: vqgan-training moves the anchors with the current batch before computing the penalty; here
    the penalty uses the anchors of the steps before (the batch's own logits enter them after its update)."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("real", torch.zeros(()))
        self.register_buffer("fake", torch.zeros(()))
        self._pending: torch.Tensor | None = None  # (real, fake) summed shares of the accumulated batch

    @torch.no_grad()
    def observe(self, real_logits: torch.Tensor, fake_logits: torch.Tensor, share: float) -> None:
        """A micro-batch's mean logits, weighted by its `share` of the accumulated batch (1 / accumulation)."""
        means = torch.stack([real_logits.float().mean(), fake_logits.float().mean()]) * share
        self._pending = means if self._pending is None else self._pending + means

    @torch.no_grad()
    def commit(self, decay: float, mean_over_processes: Callable[[torch.Tensor], torch.Tensor] | None = None) -> None:
        """anchor <- decay * anchor + (1 - decay) * the accumulated batch's mean (vqgan-training HEAD 379fe36,
        vae_trainer.py: `lecam_anchor_real_logits = lecam_beta * ... + (1 - lecam_beta) * avg_real_logits`,
        beta 0.9, with the means averaged over processes first)."""
        pending, self._pending = self._pending, None
        if pending is None:
            return
        if mean_over_processes is not None:
            pending = mean_over_processes(pending)
        self.real.mul_(decay).add_((1 - decay) * pending[0])
        self.fake.mul_(decay).add_((1 - decay) * pending[1])

    def discard(self) -> None:
        self._pending = None


def lecam_penalty(real_logits: torch.Tensor, fake_logits: torch.Tensor, anchor_real: torch.Tensor, anchor_fake: torch.Tensor) -> torch.Tensor:
    """mean((D(x) - anchor_fake)^2) + mean((D(x̂) - anchor_real)^2) (Tseng et al. 2021, as vqgan-training
    HEAD computes it: real logits pulled towards the fake anchor and fake towards the real one)."""
    return (real_logits.float() - anchor_fake).pow(2).mean() + (fake_logits.float() - anchor_real).pow(2).mean()


def r1_penalty(real_logits: torch.Tensor, real_images: torch.Tensor) -> torch.Tensor:
    """E[||d sum(D(x)) / d x||^2] over the real images, with the graph kept so the penalty trains the
    discriminator (StyleGAN2-ADA training/loss.py, `StyleGAN2Loss.accumulate_gradients`, phase Dr1:
    `r1_grads.square().sum([1,2,3])`; the caller multiplies by gamma / 2 and the lazy interval)."""
    (gradient,) = torch.autograd.grad(real_logits.float().sum(), real_images, create_graph=True)
    return gradient.float().pow(2).flatten(1).sum(dim=1).mean()
