"""The vq family's codebook as a unit: the latent quantised as the export quantises it
(`models.quantizer.lookup`, diffusers' own lookup), the codebook terms (`models.quantizer.terms.vq_loss`;
FSQ: the bound penalty) x `codebook_weight`, decoding of the quantised latents, and the codebook's training state
(`models.quantizer.Codebook`: EMA statistics, k-means start, restarts), observed per micro-batch and
committed once per generator step after a finite update."""

from __future__ import annotations

import torch
from torch import nn

from vaetrain.models.families import family_of
from vaetrain.models.quantizer import ALIVE_USE, Codebook, fsq_bound_penalty, lookup, vq_loss
from vaetrain.training.diagnostics import Alarm
from vaetrain.training.features.base import Feature, Latents, Setup, Update, network


class CodebookFeature(Feature):
    name = "codebook"
    setting = "the vq family"
    quantises_latents = True
    alarms = (
        Alarm(
            "train/codebook_alive",
            0.1,
            "only {value:.1%} of the codebook stayed in use for {patience} steps: it is collapsing (set "
            "model.autoencoder.quantizer.restart_threshold, ema_decay or kmeans_init, or a smaller codebook_size / embed_dim)",
        ),
    )
    networks = (network("codebook", "probe_restore", "the vq family's codebook statistics (EMA sums, use counts)"),)

    @classmethod
    def wanted(cls, setup: Setup, autoencoder: nn.Module) -> bool:
        return family_of(autoencoder).vocabulary(autoencoder) is not None

    def build(self, holder, autoencoder) -> None:
        super().build(holder, autoencoder)
        self.family = family_of(autoencoder)
        holder.codebook = Codebook(self.setup.autoencoder.quantizer, self.family.codebook(autoencoder).shape[1])

    def place(self, rank: int, world_size: int) -> None:
        self.holder.codebook.place(rank, world_size)  # its samples are numbered over all processes' images

    def decode(self, forward, stage: Latents) -> torch.Tensor:
        codebook, autoencoder = self.holder.codebook, self.holder.autoencoder
        config = codebook.config
        quantized = lookup(self.family.codebook(autoencoder), stage.latents, config.levels if config.kind == "fsq" else None)
        if torch.is_grad_enabled():
            codebook.observe(quantized.inputs.detach(), quantized.indices, len(stage.latents))
        if config.kind == "fsq":
            loss = config.fsq_bound_weight * fsq_bound_penalty(quantized.inputs)
        else:
            loss = vq_loss(quantized.inputs, quantized.codes, config.beta, legacy=config.legacy_loss, codebook_trained=config.ema_decay is None)
        share = torch.bincount(quantized.indices, minlength=config.size).float() / len(quantized.indices)
        perplexity = torch.exp(-(share * torch.log(share.clamp_min(1e-12))).sum())
        stage.logs |= {
            "train/codebook_loss": loss.detach(),
            "train/codebook_used": (share > 0).float().mean(),
            "train/codebook_perplexity": perplexity,
            "train/codebook_alive": (codebook.usage > ALIVE_USE).float().mean(),
        }
        stage.extra.append(self.setup.loss.codebook_weight * loss)
        return self.family.decode_quantized(autoencoder, quantized.latents)

    def commit(self, network: str, update: Update) -> None:
        if network != "generator":
            return
        codebook, processes = self.holder.codebook, update.processes
        if update.finite:
            reduce_sum = (lambda t: processes.mean(t) * processes.count) if processes else None
            codebook.commit(self.family.codebook(self.holder.autoencoder), reduce_sum, update.engine.gather if processes else None)
        else:
            codebook.discard()

    def discard(self) -> None:
        self.holder.codebook.discard()
