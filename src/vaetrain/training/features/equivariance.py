"""EQ-VAE as a unit: per micro-batch, a latent transform (or a downscaled batch) is drawn; the decoder reads
the transformed latent and the reconstruction is compared with the images transformed alike
(`losses.equivariance`: the draws and the transforms)."""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from vaetrain.losses.equivariance import EquivarianceConfig, LatentTransform, draw_low_resolution, draw_transform
from vaetrain.training.features.base import Feature, Latents, Run, Setup


class Equivariance(Feature):
    name = "equivariance"
    setting = "model.loss.equivariance"
    needs_continuous_latents = True
    reads_encoder_latents = True

    @classmethod
    def wanted(cls, setup: Setup, autoencoder: nn.Module) -> bool:
        return setup.loss.equivariance.probability > 0

    def __init__(self, setup: Setup) -> None:
        super().__init__(setup)
        self.transform: LatentTransform | None = None  # this micro-batch's draw

    def conflicts(self, run: Run) -> Iterator[str]:
        if run.setup.discriminator.condition_on_latents:
            yield "model.discriminator.condition_on_latents does not apply with model.loss.equivariance (the decoded latents are transformed)"
        if run.family.video:
            yield "video families: model.loss.equivariance is image-only"

    def begin(self, images: torch.Tensor, factor: int) -> torch.Tensor:
        self.transform, images = draw_equivariance(self.setup.loss.equivariance, images, factor)
        return images

    def on_latents(self, stage: Latents, factor: int) -> None:
        if self.transform is not None:
            stage.latents, stage.target = self.transform.latents(stage.latents), self.transform.images(stage.images, factor)


def draw_equivariance(config: EquivarianceConfig, images: torch.Tensor, factor: int) -> tuple[LatentTransform | None, torch.Tensor]:
    """EQ-VAE's draw for one micro-batch: a latent transform, or else perhaps the batch downscaled."""
    transform = draw_transform(config, (images.shape[-2] // factor, images.shape[-1] // factor), factor)
    if transform is None:
        size = draw_low_resolution(config, images.shape[-2:], factor)
        if size is not None:
            images = F.interpolate(images.float(), size=size, mode="bilinear", align_corners=False).to(images.dtype)
    return transform, images
