"""Checks that fail a run in one line before it starts, when settings and data cannot work together."""

from __future__ import annotations

from vaetrain.errors import ConfigError
from vaetrain.losses.config import LossConfig
from vaetrain.losses.structural import WINDOW
from vaetrain.models.discriminator import DiscriminatorConfig
from vaetrain.models.families import family_of
from vaetrain.models.vgg_discriminator import PATCH
from vaetrain.training.features import Feature, Setup, check_sizes


def check_image_sizes(datamodule, downsampling_factor: int, discriminator: DiscriminatorConfig, loss: LossConfig, features: list[Feature]) -> None:
    """The autoencoder's factor divides every training size; the VGG16 discriminator's 16 does too;
    MS-SSIM's widest window fits; and every unit's own size check (`Feature.check_sizes`)."""
    datamodule.check_resolution(downsampling_factor)
    sides = datamodule.training_sides()
    if discriminator.kind == "vgg16" and any(side % PATCH for side in sides):
        raise ConfigError(f"model.discriminator.kind=vgg16 needs image sides divisible by {PATCH}; data.resolution is {datamodule.resolution}")
    if loss.reconstruction == "ms_ssim_l1" and min(sides) <= WINDOW // 2:
        raise ConfigError(
            f"model.loss.reconstruction=ms_ssim_l1 needs images over {WINDOW // 2} px (its widest window's reach); data.resolution is {min(sides)}"
        )
    check_sizes(features, sides, datamodule.resolution)


def check_frames(datamodule, autoencoder, kind: str = "patchgan") -> None:
    """Clips for a video family (of frame counts it reads: each of a `data.frames` list), images for the others."""
    family, clip = family_of(autoencoder), getattr(datamodule, "clip", None)
    if family.video and clip is None:
        raise ConfigError(f"{family.class_name} trains on clips: set data.frames (e.g. 5) and data.path to a folder of videos")
    for frames in getattr(datamodule, "clip_lengths", None) or [clip.frames if clip is not None else 0]:
        family.check_frames(autoencoder, frames)
    if kind == "patchgan3d" and not family.video:
        raise ConfigError("model.discriminator.kind=patchgan3d reads clips; the autoencoder is an image family (use patchgan)")


def check_channels(datamodule, in_channels: int, out_channels: int) -> None:
    """The autoencoder reads and writes as many channels as the images have (`data.channels`)."""
    channels = datamodule.pixels.channels if hasattr(datamodule, "pixels") else 3
    if channels != in_channels or channels != out_channels:
        raise ConfigError(
            f"data.channels={channels}, but the autoencoder reads {in_channels} and writes {out_channels} channels; "
            f"set model.autoencoder.in_channels and out_channels to {channels}"
        )


def check_terms(setup: Setup, autoencoder) -> None:
    """Settings that cannot go together beyond the units' own refusals (`Feature.conflicts`, checked as the
    units are built), refused in one line."""
    if family_of(autoencoder).video and setup.discriminator.condition_on_latents:
        raise ConfigError("video families: model.discriminator.condition_on_latents is image-only")


def check_data(datamodule, autoencoder, image_channels: int, discriminator: DiscriminatorConfig, loss: LossConfig, features: list[Feature]) -> None:
    """Fails early, in one line, when the images cannot be trained at their size, channel count or frame count."""
    family = family_of(autoencoder)
    check_image_sizes(datamodule, family.downsampling_factor(autoencoder), discriminator, loss, features)
    if (reason := family.check_sides(autoencoder, datamodule.training_sides())) is not None:
        raise ConfigError(reason)
    check_channels(datamodule, family_of(autoencoder).image_channels(autoencoder)[0], image_channels)
    check_frames(datamodule, autoencoder, discriminator.kind)
