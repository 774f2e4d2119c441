"""The autoencoder's forward inside the GAN step: encode (or a unit's encoder path), posterior sample, the
latent stage every training unit may add to in the registry's order (`features.FEATURES`), and decode (or a
unit's decoder path). The units' extra losses are summed into the generator's backward.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from vaetrain.models.families import downsampling_factor, family_of
from vaetrain.training.features.base import Encoded, Feature, Latents


@dataclass
class Reconstruction:
    """One forward: the images the reconstruction is compared with (transformed like the latent when a unit
    transforms it), the reconstruction, the posterior, and what the units add."""

    target: torch.Tensor
    images: torch.Tensor
    mean: torch.Tensor
    logvar: torch.Tensor | None
    extra_loss: torch.Tensor | None = None
    logs: dict = field(default_factory=dict)


class AutoencoderForward:
    """`forward(images)` -> `Reconstruction`, for the step's generator and discriminator halves."""

    def __init__(self, networks, settings, sample_posterior: bool, features: list[Feature]) -> None:
        self.networks = networks
        self.settings = settings
        self.sample_posterior = sample_posterior
        self.features = features
        self.family = family_of(networks.autoencoder)
        self.factor = downsampling_factor(networks.autoencoder)

    def __call__(self, images: torch.Tensor) -> Reconstruction:
        encoded = next((e for f in self.features if (e := f.encode(self, images)) is not None), None) or self._encode(images)
        stage = Latents(images, encoded.latents, encoded.target, torch.is_grad_enabled(), encoded.extra, encoded.logs)
        for feature in self.features:
            feature.on_latents(stage, self.factor)
        decoded = next((d for f in self.features if (d := f.decode(self, stage)) is not None), None)
        if decoded is None:
            decoded = self.family.decode(self.networks.autoencoder, stage.latents)
        extra = None
        for loss in stage.extra:
            extra = loss if extra is None else extra + loss
        return Reconstruction(stage.target, decoded, encoded.mean, encoded.logvar, extra, stage.logs)

    def _encode(self, images: torch.Tensor) -> Encoded:
        """Encode (without a graph when the encoder is frozen), clamp the mean if asked, sample or take the mean
        (the fixed posterior is vqgan-training's `DiagonalGaussian`, ae.py: z = mu * (1 + std * eps))."""
        settings = self.settings
        with torch.set_grad_enabled(torch.is_grad_enabled() and self.encoder_trains()):
            posterior = self.family.encode(self.networks.autoencoder, images)
        mean = posterior.mean.float()
        if settings.latent_clamp is not None:
            mean = mean.clamp(-settings.latent_clamp, settings.latent_clamp)
        noise = torch.randn_like(mean) if self.sample_posterior else None
        if posterior.logvar is None:  # a deterministic family
            logvar, latents = None, mean
        elif settings.posterior == "fixed":
            logvar, latents = None, mean if noise is None else mean * (1 + settings.posterior_std * noise)
        else:
            logvar = posterior.logvar.float()
            latents = mean if noise is None else mean + torch.exp(0.5 * logvar) * noise
        return Encoded(mean, logvar, latents, images)

    def encoder_trains(self) -> bool:
        return any(p.requires_grad for m in self.family.encoder_modules(self.networks.autoencoder) for p in m.parameters())
