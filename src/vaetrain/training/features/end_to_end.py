"""End-to-end tuning as a unit (`model.loss.end_to_end`, REPA-E: End2End-Diffusion/REPA-E, `train_repae.py`,
`main`; the formulas and coefficients are `losses.end_to_end`'s): a diffusion transformer (REPA-E's SiT,
`models.diffusion_transformer.SiT`) with its own optimizer, EMA and checkpoint state, trained in the same
step as the autoencoder and its discriminator.

Per micro-batch: `on_latents` takes the frozen representation encoder's features of the images, draws
t ~ U(0, 1) and the noise once (the reference reuses `time_input` and `noises` for both passes), and adds
`vae_alignment_weight` x the projection loss of the SiT's tokens on the latent to the VAE's loss (the SiT
takes no gradient from it: the engine turns its parameters off during the generator's backward, as the
reference's `requires_grad(model, False)`); `network_loss("diffusion")` is the SiT's loss on the detached
latent: denoising + `alignment_weight` x projection. After a finite update, `commit` moves the BatchNorm's
statistics and the SiT's EMA (decay 0.9999, buffers averaged too: `update_ema`); after a skipped one,
nothing moves.

Deviations, each for a reason:
- The BatchNorm always normalises with its running statistics, which move once per accumulated batch by
  the accumulated batch's per-channel mean and (unbiased) variance over all micro-batches and processes,
  with the momentum 0.1, after a finite update only. The reference's SiT in train mode normalises by each
  micro-batch's statistics and moves them at every forward (with SyncBatchNorm across GPUs): a recipe whose
  strength changes with the micro-batch and a buffer moved before any update guard. The first accumulated
  batch's statistics replace the initial (0, 1) outright, standing in for the reference's `init_bn` from
  statistics measured beforehand; that first batch trains with the initial ones.
- Unconditional (one class label): vaetrain has no labels; the reference's SiT is class-conditional on
  ImageNet with 10 % label dropout.
- The representation encoder is VA-VAE's loader's (`models.feature_encoders`): DINOv2's patch tokens after
  its last layer norm (the reference's `x_norm_patchtokens`), images resized bilinearly to 224 px (the
  reference: bicubic), resized to the SiT's token grid when they differ.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn

from vaetrain.losses.end_to_end import EndToEndConfig, denoising_loss, projection_loss
from vaetrain.models.diffusion_transformer import SiT, build_transformer
from vaetrain.models.ema import build_ema
from vaetrain.models.families import family_of
from vaetrain.models.feature_encoders import build_feature_encoder
from vaetrain.training.features.base import Feature, Latents, Run, Setup, Update, network


class EndToEnd(Feature):
    name = "end_to_end"
    networks = (
        network("diffusion", "trained shard probe_restore", "REPA-E's SiT: latent BatchNorm, DiT, REPA projector (own optimizer)"),
        network("diffusion_ema", "shard probe_restore", "the SiT's EMA copy (exported beside the autoencoder)"),
        network("representation_encoder", "frozen", "REPA-E's frozen representation encoder (DINOv2)"),
    )

    @classmethod
    def wanted(cls, setup: Setup, autoencoder: nn.Module) -> bool:
        return setup.loss.end_to_end.enabled

    def __init__(self, setup: Setup) -> None:
        super().__init__(setup)
        self.config: EndToEndConfig = setup.loss.end_to_end
        self._pending: tuple[torch.Tensor, ...] | None = None
        self._window: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None  # per-channel sum, sum of squares, count

    def build(self, holder, autoencoder) -> None:
        super().build(holder, autoencoder)
        config = self.config
        encoder = self.setup.injected.get("representation_encoder") or build_feature_encoder(config.encoder)
        channels = family_of(autoencoder).latent_channels(autoencoder)
        transformer = build_transformer(config.size, channels, 32, config.patch_size)  # any square grid runs: positions are recomputed
        holder.representation_encoder = encoder
        holder.diffusion = SiT(transformer, encoder.feature_dim, config.encoder_depth, config.projector_dim)
        holder.diffusion.batch_norm.momentum = config.batch_norm_momentum
        holder.diffusion_ema = build_ema(holder.diffusion, config.ema_decay)

    def conflicts(self, run: Run) -> Iterator[str]:
        if run.family.name != "kl":
            yield "model.loss.end_to_end needs the kl family (REPA-E tunes an AutoencoderKL)"
        if run.in_channels != 3:
            yield f"model.loss.end_to_end: its representation encoder reads RGB; the images have {run.in_channels} channels"
        if "distillation" in run.active or "alignment" in run.active:
            yield "model.loss.end_to_end does not go with model.loss.alignment or model.loss.distillation (one latent objective at a time)"

    def check_sizes(self, sides: list[int], resolution) -> Iterator[str]:
        patch = self.config.patch_size * family_of(self.holder.autoencoder).downsampling_factor(self.holder.autoencoder) if self.holder else None
        for side in sides:
            if patch and side % patch:
                yield f"model.loss.end_to_end.patch_size {self.config.patch_size}: training images of {side} px do not make whole SiT patches"

    def optimizer_config(self, network: str):
        from vaetrain.training.optim import OptimizerConfig  # training.optim imports the units' registry

        config = self.config
        return OptimizerConfig(name="adamw", lr=config.lr, betas=config.betas, weight_decay=0.0, gradient_clip_norm=config.gradient_clip_norm)

    def draw(self, latents: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """t ~ U(0, 1) per image and the noise (`SiT.forward`, `weighting: uniform`)."""
        return torch.rand(len(latents), device=latents.device), torch.randn_like(latents)

    def on_latents(self, stage: Latents, factor: int) -> None:
        holder, latents = self.holder, stage.latents.float()
        features = holder.representation_encoder(stage.images)
        t, noise = self.draw(latents)
        self._pending = (latents.detach(), features, t, noise)
        if stage.grad and self.config.vae_alignment_weight > 0:
            _, _, projected = holder.diffusion(latents, t, noise, align_only=True)
            loss = projection_loss(projected, features)
            stage.extra.append(self.config.vae_alignment_weight * loss)
            stage.logs["train/vae_alignment"] = loss.detach()

    def network_loss(self, network: str) -> tuple[torch.Tensor | None, dict[str, torch.Tensor]]:
        if self._pending is None:
            return None, {}
        latents, features, t, noise = self._pending
        self._pending = None
        prediction, target, projected = self.holder.diffusion(latents, t, noise)
        denoising, alignment = denoising_loss(prediction, target), projection_loss(projected, features)
        self._observe(latents)
        logs = {"train/denoising": denoising.detach(), "train/sit_alignment": alignment.detach()}
        return denoising + self.config.alignment_weight * alignment, logs

    def _observe(self, latents: torch.Tensor) -> None:
        flat = latents.double().transpose(0, 1).flatten(1)
        shares = (flat.sum(1), flat.square().sum(1), torch.full_like(flat[:, 0], flat.shape[1]))
        self._window = shares if self._window is None else tuple(a + b for a, b in zip(self._window, shares))

    def commit(self, network: str, update: Update) -> None:
        if network != "diffusion":
            return
        window, self._window = self._window, None
        if not update.finite or window is None:
            return
        if update.processes is not None:
            window = tuple(update.processes.mean(value) * update.processes.count for value in window)  # the global sums
        total, squares, count = window
        mean = total / count
        variance = (squares / count - mean.square()).clamp_min(0) * count / (count - 1).clamp_min(1)
        batch_norm = self.holder.diffusion.batch_norm
        momentum = 1.0 if int(batch_norm.num_batches_tracked) == 0 else batch_norm.momentum
        batch_norm.running_mean.lerp_(mean.to(batch_norm.running_mean), momentum)
        batch_norm.running_var.lerp_(variance.to(batch_norm.running_var), momentum)
        batch_norm.num_batches_tracked.add_(1)
        self.holder.diffusion_ema.update_parameters(self.holder.diffusion)

    def discard(self) -> None:
        self._pending, self._window = None, None
