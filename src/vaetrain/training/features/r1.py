"""Lazy R1 as a unit (`model.loss.r1_weight`, `r1_every`): every `r1_every` discriminator steps the real
images take gradients and the penalty gamma / 2 x `r1_every` x E||d D(x) / d x||^2 is added
(`losses.gan.r1_penalty`; StyleGAN2's lazy regularisation)."""

from __future__ import annotations

import torch
from torch import nn

from vaetrain.losses.gan import r1_penalty
from vaetrain.training.features.base import Feature, Setup


class R1(Feature):
    name = "r1"

    @classmethod
    def wanted(cls, setup: Setup, autoencoder: nn.Module) -> bool:
        return setup.loss.r1_weight > 0

    def __init__(self, setup: Setup) -> None:
        super().__init__(setup)
        self.due = False

    def prepare_real(self, real: torch.Tensor, discriminator_steps: int) -> torch.Tensor:
        self.due = discriminator_steps % self.setup.loss.r1_every == 0
        return real.detach().requires_grad_(True) if self.due else real

    def discriminator_terms(self, real_logits: torch.Tensor, fake_logits: torch.Tensor, real: torch.Tensor, accumulate: int):
        if not self.due:
            return None, {}
        r1 = r1_penalty(real_logits, real)
        loss = self.setup.loss
        return 0.5 * loss.r1_weight * loss.r1_every * r1, {"train/r1": r1.detach()}
