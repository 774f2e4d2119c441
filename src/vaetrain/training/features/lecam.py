"""LeCam regularisation as a unit (`model.loss.lecam_weight`): the discriminator's logits pulled towards
moving anchors of the other side's mean logits (`losses.lecam.LeCamAnchors` holds them as checkpointed
buffers; `lecam_penalty` is the formula). Each micro-batch adds its share of the accumulated batch's mean
logits; the anchors move once per discriminator step, with the process mean, after a finite update."""

from __future__ import annotations

import torch
from torch import nn

from vaetrain.losses.lecam import LeCamAnchors, lecam_penalty
from vaetrain.training.features.base import Feature, Setup, Update, network


class LeCam(Feature):
    name = "lecam"
    networks = (network("lecam_anchors", "probe_restore", "LeCam's moving anchors (buffers)"),)

    @classmethod
    def wanted(cls, setup: Setup, autoencoder: nn.Module) -> bool:
        return setup.loss.lecam_weight > 0

    def build(self, holder, autoencoder) -> None:
        super().build(holder, autoencoder)
        holder.lecam_anchors = LeCamAnchors()

    def discriminator_terms(self, real_logits: torch.Tensor, fake_logits: torch.Tensor, real: torch.Tensor, accumulate: int):
        anchors = self.holder.lecam_anchors
        anchors.observe(real_logits.detach(), fake_logits.detach(), 1.0 / accumulate)
        lecam = lecam_penalty(real_logits, fake_logits, anchors.real, anchors.fake)
        logs = {"train/lecam": lecam.detach(), "train/lecam_anchor_real": anchors.real.clone(), "train/lecam_anchor_fake": anchors.fake.clone()}
        return self.setup.loss.lecam_weight * lecam, logs

    def commit(self, network: str, update: Update) -> None:
        if network != "discriminator":
            return
        anchors = self.holder.lecam_anchors
        processes = update.processes
        anchors.commit(self.setup.loss.lecam_decay, processes and processes.mean) if update.finite else anchors.discard()

    def discard(self) -> None:
        self.holder.lecam_anchors.discard()
