"""Adversarial losses on PatchGAN logits. Every function averages over all logits of the batch."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

GanLossKind = Literal["hinge", "vanilla", "non_saturating"]


def discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor, kind: GanLossKind) -> torch.Tensor:
    """0.5 * (loss on real + loss on fake), in fp32. `vanilla` and `non_saturating` share the BCE loss."""
    real, fake = real_logits.float(), fake_logits.float()
    if kind == "hinge":
        return 0.5 * (F.relu(1.0 - real).mean() + F.relu(1.0 + fake).mean())
    if kind in ("vanilla", "non_saturating"):
        return 0.5 * (F.softplus(-real).mean() + F.softplus(fake).mean())
    raise ValueError(f"unknown GAN loss {kind!r}")


def generator_adversarial_loss(fake_logits: torch.Tensor, kind: GanLossKind) -> torch.Tensor:
    """The autoencoder's adversarial term.

    hinge: -mean(D(x̂)) (LDM/taming); vanilla: the saturating minimax form mean(log(1 - sigmoid(D(x̂))));
    non_saturating: -mean(log sigmoid(D(x̂))), the usual choice with BCE.
    """
    fake = fake_logits.float()
    if kind == "hinge":
        return -fake.mean()
    if kind == "vanilla":
        return -F.softplus(fake).mean()
    if kind == "non_saturating":
        return F.softplus(-fake).mean()
    raise ValueError(f"unknown GAN loss {kind!r}")
