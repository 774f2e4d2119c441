"""Checks that fail a run in one line before it starts, when settings and data cannot work together."""

from __future__ import annotations

from vaetrain.errors import ConfigError
from vaetrain.losses.objective import LossConfig
from vaetrain.losses.terms import FLAT_MASK_BLUR
from vaetrain.models.discriminator import DiscriminatorConfig
from vaetrain.models.vgg_discriminator import PATCH


def check_image_sizes(datamodule, downsampling_factor: int, discriminator: DiscriminatorConfig, loss: LossConfig) -> None:
    """The autoencoder's factor divides every training size; the VGG16 discriminator's 16 does too; the
    flat-region mask's blur fits inside the pooled images."""
    datamodule.check_resolution(downsampling_factor)
    sides = datamodule.training_sides()
    if discriminator.kind == "vgg16" and any(side % PATCH for side in sides):
        raise ConfigError(f"model.discriminator.kind=vgg16 needs image sides divisible by {PATCH}; data.resolution is {datamodule.resolution}")
    pooled = loss.pooled_reconstruction
    if pooled.weight > 0 and pooled.mask and min(sides) // pooled.factor <= FLAT_MASK_BLUR // 2:
        raise ConfigError(
            f"model.loss.pooled_reconstruction.mask needs pooled images over {FLAT_MASK_BLUR // 2} px (its blur's reach); "
            f"data.resolution {min(sides)} / factor {pooled.factor} is {min(sides) // pooled.factor}"
        )


def check_channels(datamodule, in_channels: int, out_channels: int) -> None:
    """The autoencoder reads and writes as many channels as the images have (`data.channels`)."""
    channels = datamodule.pixels.channels if hasattr(datamodule, "pixels") else 3
    if channels != in_channels or channels != out_channels:
        raise ConfigError(
            f"data.channels={channels}, but the autoencoder reads {in_channels} and writes {out_channels} channels; "
            f"set model.autoencoder.in_channels and out_channels to {channels}"
        )
