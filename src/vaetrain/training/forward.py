"""The autoencoder's forward inside the GAN step: encode, posterior sample, the latent terms (alignment,
noise, EQ-VAE's transform) and decode, or, distilling, the teacher's latents decoded by the student."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from vaetrain.losses.distillation import encoder_distillation_loss
from vaetrain.losses.equivariance import LatentTransform
from vaetrain.losses.objective import LossConfig
from vaetrain.models.families import downsampling_factor, family_of
from vaetrain.models.last_layers import EncoderLastLayer
from vaetrain.training.distillation import TeacherTargets
from vaetrain.training.latent_terms import AlignmentTerm, noisy_latents


@dataclass
class Reconstruction:
    """One forward: the images the reconstruction is compared with (transformed like the latent under
    EQ-VAE), the reconstruction, the posterior, and what the latent terms add."""

    target: torch.Tensor
    images: torch.Tensor
    mean: torch.Tensor
    logvar: torch.Tensor | None
    extra_loss: torch.Tensor | None = None
    logs: dict = field(default_factory=dict)


class AutoencoderForward:
    """`forward(images, transform)` -> `Reconstruction`, for the step's generator and discriminator halves."""

    def __init__(self, networks, loss: LossConfig, settings) -> None:
        self.networks = networks
        self.loss = loss
        self.settings = settings
        self.family = family_of(networks.autoencoder)
        self.factor = downsampling_factor(networks.autoencoder)
        teacher = getattr(networks, "teacher", None)
        self.teacher = TeacherTargets(teacher) if teacher is not None else None
        alignment = loss.alignment
        self.alignment = AlignmentTerm(alignment, EncoderLastLayer(networks.autoencoder)) if alignment.weight > 0 else None

    def __call__(self, images: torch.Tensor, transform: LatentTransform | None = None) -> Reconstruction:
        """Encode (without a graph when the encoder is frozen), clamp the mean if asked, sample or take the mean
        (the fixed posterior is vqgan-training's `DiagonalGaussian`, ae.py: z = mu * (1 + std * eps)), add
        the alignment term while gradients are on, add latent noise, transform (EQ-VAE) and decode."""
        autoencoder, settings = self.networks.autoencoder, self.settings
        if self.teacher is not None:
            return self._distill(images)
        with torch.set_grad_enabled(torch.is_grad_enabled() and self._encoder_trains()):
            posterior = self.family.encode(autoencoder, images)
        mean = posterior.mean.float()
        if settings.latent_clamp is not None:
            mean = mean.clamp(-settings.latent_clamp, settings.latent_clamp)
        noise = torch.randn_like(mean) if self.loss.sample_posterior else None
        if posterior.logvar is None:  # a deterministic family
            logvar, latents = None, mean
        elif settings.posterior == "fixed":
            logvar, latents = None, mean if noise is None else mean * (1 + settings.posterior_std * noise)
        else:
            logvar = posterior.logvar.float()
            latents = mean if noise is None else mean + torch.exp(0.5 * logvar) * noise
        extra, logs = None, {}
        if self.alignment is not None and torch.is_grad_enabled():
            networks = self.networks
            extra, latents, logs = self.alignment.weighted_loss(images, latents, networks.alignment_encoder, networks.alignment_projection)
        latents = noisy_latents(latents, self.loss.latent_noise)
        target = images
        if transform is not None:
            latents, target = transform.latents(latents), transform.images(images, self.factor)
        return Reconstruction(target, self.family.decode(autoencoder, latents), mean, logvar, extra, logs)

    def _distill(self, images: torch.Tensor) -> Reconstruction:
        """`losses.distillation`: the student decodes the teacher's scaled latents (with latent noise if
        asked); its encoder, while it trains, adds the weighted squared error to them."""
        teacher, student, config = self.networks.teacher, self.networks.autoencoder, self.loss.distillation
        latents, raw = self.teacher.latents(teacher, images)
        target = images if config.decoder_target == "image" else self.teacher.images(teacher, raw).to(images.dtype)
        extra, logs = None, {}
        if config.encoder_weight > 0 and torch.is_grad_enabled() and self._encoder_trains():
            encoder_loss = encoder_distillation_loss(self.family.encode(student, images).mean, latents)
            extra, logs = config.encoder_weight * encoder_loss, {"train/distill_encoder": encoder_loss.detach()}
        decoded = self.family.decode(student, noisy_latents(latents, self.loss.latent_noise))
        return Reconstruction(target, decoded, latents, None, extra, logs)

    def _encoder_trains(self) -> bool:
        return any(p.requires_grad for m in self.family.encoder_modules(self.networks.autoencoder) for p in m.parameters())
