"""EQ-VAE's equivariance regulariser (Kouzelis et al. 2025; zelaki/eqvae, train_eqvae/ldm/models/
autoencoder.py, `AutoencoderKL.training_step` and `forward`): on a share of the batches the sampled latent
is downscaled (bilinear) and rotated by a multiple of 90 degrees before decoding, and the usual loss
compares the decoded image with the image transformed the same way; of the other batches a share trains
on downscaled images ("prior preservation" at low resolution).

Deviation: the reference draws the scale from {8/32, ..., 31/32} and passes it to `interpolate` as a
factor, which matches image and latent sizes only for 256 px images with f8 (a latent side of 32); here
the latent's new side is drawn from the integers in [min_scale x side, max_scale x side] and the image is
resized to exactly that side times the downsampling factor, so any size works (for 32-wide latents the
choices are the reference's). And downscaled images never go below `min_image_side` (32 px: PatchGAN's and
AlexNet-LPIPS' smallest input; the reference's smallest is 64 px): smaller sides are not drawn, and where
none is left (a small model at 32 px) the latent is only rotated.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from vaetrain.errors import ConfigError


@dataclass(frozen=True)
class EquivarianceConfig:
    """EQ-VAE's regulariser; probability 0 switches it off."""

    probability: float = 0.0
    """Share of batches decoded from transformed latents (EQ-VAE: 0.5)."""
    min_scale: float = 0.25
    """Smallest downscale of the latent's side (EQ-VAE: 8/32)."""
    max_scale: float = 0.97
    """Largest downscale (EQ-VAE: 31/32)."""
    rotate: bool = True
    """Also rotate latent and image by 90, 180 or 270 degrees (EQ-VAE: always both)."""
    low_resolution_probability: float = 0.25
    """Of the other batches, the share trained on downscaled images (EQ-VAE's prior preservation: 0.25)."""
    min_image_side: int = 32
    """Downscaled images keep at least this side in pixels (the discriminator and LPIPS need ~32)."""

    def __post_init__(self) -> None:
        for name in ("probability", "low_resolution_probability"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"model.loss.equivariance.{name} must be in [0, 1], got {getattr(self, name)}")
        if not 0.0 < self.min_scale <= self.max_scale <= 1.0:
            raise ConfigError(f"model.loss.equivariance: need 0 < min_scale <= max_scale <= 1, got {self.min_scale}, {self.max_scale}")
        if self.min_image_side < 1:
            raise ConfigError(f"model.loss.equivariance.min_image_side must be >= 1, got {self.min_image_side}")


@dataclass(frozen=True)
class LatentTransform:
    """A latent side (and the image's, times the factor) to resize to, and quarter turns to rotate by."""

    size: tuple[int, int] | None = None
    quarter_turns: int = 0

    def latents(self, latents: torch.Tensor) -> torch.Tensor:
        if self.size is not None:
            latents = F.interpolate(latents, size=self.size, mode="bilinear", align_corners=False)
        return torch.rot90(latents, k=self.quarter_turns, dims=[-1, -2]) if self.quarter_turns else latents

    def images(self, images: torch.Tensor, factor: int) -> torch.Tensor:
        if self.size is not None:
            size = (self.size[0] * factor, self.size[1] * factor)
            images = F.interpolate(images.float(), size=size, mode="bilinear", align_corners=False).to(images.dtype)
        return torch.rot90(images, k=self.quarter_turns, dims=[-1, -2]) if self.quarter_turns else images


def _side(side: int, scale: float) -> int:
    return max(1, round(side * scale))


def draw_transform(config: EquivarianceConfig, latent_size: tuple[int, int], factor: int) -> LatentTransform | None:
    """With `probability`, a random downscale (same factor both ways; none if every allowed side would take
    the image below `min_image_side`) and, if `rotate`, 1-3 quarter turns; drawn from torch's RNG, so a
    resumed run draws the same. `factor`: the autoencoder's downsampling factor."""
    if config.probability == 0 or float(torch.rand(())) >= config.probability:
        return None
    height, width = latent_size
    low = max(1, math.ceil(height * config.min_scale), math.ceil(config.min_image_side / factor))
    high = math.floor(height * config.max_scale)
    size = None
    if low <= high:
        new_height = int(torch.randint(low, high + 1, ()))
        size = (new_height, _side(width, new_height / height))
    turns = int(torch.randint(1, 4, ())) if config.rotate else 0
    return LatentTransform(size, turns) if size is not None or turns else None


def draw_low_resolution(config: EquivarianceConfig, image_size: tuple[int, int], factor: int) -> tuple[int, int] | None:
    """For a batch without a latent transform: with `low_resolution_probability` (of all batches' remainder),
    a downscaled image size, a multiple of the downsampling factor."""
    if config.probability == 0 or config.low_resolution_probability == 0 or float(torch.rand(())) >= config.low_resolution_probability:
        return None
    only_scale = EquivarianceConfig(1.0, config.min_scale, config.max_scale, False, min_image_side=config.min_image_side)
    transform = draw_transform(only_scale, (image_size[0] // factor, image_size[1] // factor), factor)
    return None if transform is None else (transform.size[0] * factor, transform.size[1] * factor)
