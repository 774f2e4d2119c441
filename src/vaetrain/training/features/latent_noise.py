"""Latent noise as a unit (`model.loss.latent_noise`): the decoder reads z + sigma x std(z) x eps, sigma ~
U(0, latent_noise) per image, so it learns to decode the slightly wrong latents a diffusion model hands it."""

from __future__ import annotations

import torch
from torch import nn

from vaetrain.training.features.base import Feature, Latents, Setup


class LatentNoise(Feature):
    name = "latent_noise"
    setting = "model.loss.latent_noise"
    needs_continuous_latents = True

    @classmethod
    def wanted(cls, setup: Setup, autoencoder: nn.Module) -> bool:
        return setup.loss.latent_noise > 0

    def on_latents(self, stage: Latents, factor: int) -> None:
        stage.latents = noisy_latents(stage.latents, self.setup.loss.latent_noise)


def noisy_latents(latents: torch.Tensor, max_sigma: float) -> torch.Tensor:
    """What the decoder reads under `loss.latent_noise`: z + sigma x std(z) x eps, sigma ~ U(0, max_sigma)
    per image and std(z) the batch's (detached), so the noise is relative to the latent's own scale (the
    units a diffusion model's output errors are in once latents are normalised)."""
    if max_sigma <= 0:
        return latents
    sigma = torch.rand(latents.shape[0], *(1,) * (latents.ndim - 1), device=latents.device) * max_sigma
    return latents + sigma * latents.detach().std() * torch.randn_like(latents)
