"""VA-VAE's alignment as a unit (`model.loss.alignment`): the latent, projected by a trained 1x1 head, is
pulled towards a frozen vision encoder's patch features (`losses.alignment.alignment_loss`), with an
adaptive weight.

The weight ||grad of the image terms|| / (||grad of the alignment term|| + 1e-4) at the encoder's last
layer, clamped to [0, 1e8] (hustvl/LightningDiT, vavae/ldm/modules/losses/contperceptual.py,
`calculate_adaptive_weight_vf`), needs the image terms' gradient at the latent, which only the step's one
backward pass produces: a hook on the decoder's input records it. That backward carries the loss divided by
the accumulation count and, under fp16, multiplied by the loss scaler's scale; `observe` undoes both, and
the two gradients are summed over the accumulated batch's micro-batches, so the weight is the one computed
on the global batch's unscaled losses whatever the memory plan and precision. The weight is set after a
finite update (`settle`) and applies from the next update on (the first update trains without the term).
Deviations: the reference computes it in the same step by a second autograd pass through the decoder,
which DDP and FSDP do not allow mid-step; the image terms' gradient here also carries the adversarial
term's.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn

from vaetrain.losses.alignment import AlignmentConfig, AlignmentHead, alignment_loss
from vaetrain.losses.objective import Processes
from vaetrain.models.families import family_of
from vaetrain.models.feature_encoders import build_feature_encoder
from vaetrain.models.last_layers import EncoderLastLayer
from vaetrain.training.features.base import Feature, Latents, Run, Setup, Update, network


class Alignment(Feature):
    name = "alignment"
    setting = "model.loss.alignment"
    reads_encoder_latents = True
    networks = (
        network("alignment_projection", "generator shard probe_restore", "VA-VAE's 1x1 projection of the latent (trained, never exported)"),
        network("alignment_encoder", "frozen", "VA-VAE's vision encoder"),
    )

    @classmethod
    def wanted(cls, setup: Setup, autoencoder: nn.Module) -> bool:
        return setup.loss.alignment.weight > 0

    def build(self, holder, autoencoder) -> None:
        super().build(holder, autoencoder)
        config = self.setup.loss.alignment
        holder.alignment_encoder = self.setup.injected.get("alignment_encoder") or build_feature_encoder(config.encoder, "model.loss.alignment.encoder")
        holder.alignment_projection = AlignmentHead(family_of(autoencoder).latent_channels(autoencoder), holder.alignment_encoder.feature_dim)
        self.term = AlignmentTerm(config, EncoderLastLayer(autoencoder))

    def conflicts(self, run: Run) -> Iterator[str]:
        if run.family.name != "kl":
            yield "model.loss.alignment needs the kl family (its adaptive weight reads AutoencoderKL's encoder conv_out and quant_conv)"
        if run.in_channels != 3:
            yield f"model.loss.alignment: its vision encoder reads RGB; the images have {run.in_channels} channels"

    def on_latents(self, stage: Latents, factor: int) -> None:
        if not stage.grad:
            return
        holder = self.holder
        extra, stage.latents, logs = self.term.weighted_loss(stage.images, stage.latents, holder.alignment_encoder, holder.alignment_projection)
        stage.extra.append(extra)
        stage.logs |= logs

    def after_generator_backward(self, loss_scale: float, accumulate: int) -> None:
        self.term.observe(loss_scale, accumulate)

    def commit(self, network: str, update: Update) -> None:
        if network == "generator":
            self.term.settle(self.holder.alignment_projection, update.processes) if update.finite else self.term.discard()

    def discard(self) -> None:
        self.term.discard()


class AlignmentTerm:
    """Per micro-batch: `weighted_loss` before the backward, `observe` after it; per accumulated batch:
    `settle` after a finite update, or `discard` after a skipped one."""

    def __init__(self, config: AlignmentConfig, last_layer: EncoderLastLayer) -> None:
        self.config = config
        self.last_layer = last_layer
        self._gradients: dict[str, torch.Tensor] = {}  # this micro-batch's, at the encoder's last layer
        self._window: dict[str, torch.Tensor] = {}  # summed over the accumulated batch, unscaled

    def weighted_loss(self, images: torch.Tensor, latents: torch.Tensor, encoder, head) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """(weight x loss to add to the backward target, the latent the decoder should read, logs). The decoder
        must decode (a function of) the returned latent, and `observe` follow the backward pass."""
        features = encoder(images)
        loss = alignment_loss(head(latents), features, self.config)
        if self.config.adaptive:
            leaf = latents.detach().requires_grad_(True)
            (gradient,) = torch.autograd.grad(alignment_loss(head(leaf), features, self.config), leaf)
            self._gradients["alignment"] = self.last_layer.weight_gradient(gradient)
            weight = self.config.weight * torch.nan_to_num(head.ratio, nan=0.0)
        else:
            weight = torch.tensor(self.config.weight, device=latents.device)
        decoder_input = latents.view_as(latents)
        if self.config.adaptive and decoder_input.requires_grad:
            decoder_input.register_hook(self._record_image_gradient)
        return weight * loss, decoder_input, {"train/alignment": loss.detach(), "train/alignment_weight": weight.detach()}

    def _record_image_gradient(self, gradient: torch.Tensor) -> None:
        self._gradients["image"] = self.last_layer.weight_gradient(gradient)

    def observe(self, loss_scale: float, accumulate: int) -> None:
        """After a micro-batch's backward of `loss_scale` x (loss / `accumulate`): adds its share of the global
        batch's unscaled gradients (each micro-batch's loss is a mean over its images, the global batch's the
        mean of the `accumulate` micro-batch means)."""
        image, alignment = self._gradients.pop("image", None), self._gradients.pop("alignment", None)
        if image is None or alignment is None:
            return
        shares = {"image": image / loss_scale, "alignment": alignment / accumulate}
        self._window = {k: v + self._window[k] if k in self._window else v for k, v in shares.items()}

    def settle(self, head, processes: Processes | None) -> None:
        """After a finite update: the accumulated batch's two gradients become the ratio in `head.ratio`
        (averaged over processes first; every process calls this at the same point)."""
        window, self._window = self._window, {}
        if not window:
            return
        image, alignment = window["image"], window["alignment"]
        if processes is not None:
            image, alignment = processes.mean(image), processes.mean(alignment)
        ratio = torch.linalg.vector_norm(image) / (torch.linalg.vector_norm(alignment) + 1e-4)
        if bool(torch.isfinite(ratio)):
            head.ratio.copy_(ratio.clamp(0.0, 1e8).detach())

    def discard(self) -> None:
        """After a skipped update: the accumulated batch's gradients are forgotten, the weight kept."""
        self._window = {}
