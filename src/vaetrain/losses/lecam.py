"""LeCam regularisation of the discriminator (Tseng et al. 2021, as vqgan-training computes it): the penalty
and the moving anchors it pulls the logits towards (`training.features.lecam` trains with them)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


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
