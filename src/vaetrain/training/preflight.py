"""Checks that fail a run in one line before it starts, when settings and data cannot work together."""

from __future__ import annotations

from vaetrain.errors import ConfigError
from vaetrain.losses.config import LossConfig
from vaetrain.losses.structural import WINDOW
from vaetrain.losses.terms import FLAT_MASK_BLUR
from vaetrain.models.discriminator import DiscriminatorConfig
from vaetrain.models.families import family_of
from vaetrain.models.vgg_discriminator import PATCH


def check_image_sizes(datamodule, downsampling_factor: int, discriminator: DiscriminatorConfig, loss: LossConfig) -> None:
    """The autoencoder's factor divides every training size; the VGG16 discriminator's 16 does too; the
    flat-region mask's blur fits inside the pooled images."""
    datamodule.check_resolution(downsampling_factor)
    sides = datamodule.training_sides()
    if discriminator.kind == "vgg16" and any(side % PATCH for side in sides):
        raise ConfigError(f"model.discriminator.kind=vgg16 needs image sides divisible by {PATCH}; data.resolution is {datamodule.resolution}")
    if loss.reconstruction == "ms_ssim_l1" and min(sides) <= WINDOW // 2:
        raise ConfigError(
            f"model.loss.reconstruction=ms_ssim_l1 needs images over {WINDOW // 2} px (its widest window's reach); data.resolution is {min(sides)}"
        )
    pooled = loss.pooled_reconstruction
    if pooled.weight > 0 and pooled.mask and min(sides) // pooled.factor <= FLAT_MASK_BLUR // 2:
        raise ConfigError(
            f"model.loss.pooled_reconstruction.mask needs pooled images over {FLAT_MASK_BLUR // 2} px (its blur's reach); "
            f"data.resolution {min(sides)} / factor {pooled.factor} is {min(sides) // pooled.factor}"
        )


def check_frames(datamodule, autoencoder, kind: str = "patchgan") -> None:
    """Clips for a video family (of a frame count it reads), images for the others."""
    family, clip = family_of(autoencoder), getattr(datamodule, "clip", None)
    if family.video and clip is None:
        raise ConfigError(f"{family.class_name} trains on clips: set data.frames (e.g. 5) and data.path to a folder of videos")
    family.check_frames(autoencoder, clip.frames if clip is not None else 0)
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


def check_terms(module) -> None:
    """Terms that need what only some set-ups have, refused in one line (the module's networks are built)."""
    loss, autoencoder = module.loss_config, module.autoencoder
    if module.alignment_projection is not None and family_of(autoencoder).name != "kl":
        raise ConfigError("model.loss.alignment needs the kl family (its adaptive weight reads AutoencoderKL's encoder conv_out and quant_conv)")
    if module.alignment_projection is not None and autoencoder.config.in_channels != 3:
        raise ConfigError(f"model.loss.alignment: its vision encoder reads RGB; the images have {autoencoder.config.in_channels} channels")
    if module.discriminator_config.condition_on_latents and loss.equivariance.probability > 0:
        raise ConfigError("model.discriminator.condition_on_latents does not apply with model.loss.equivariance (the decoded latents are transformed)")
    if module.codebook is not None and (loss.equivariance.probability > 0 or loss.latent_noise > 0 or module.teacher is not None):
        raise ConfigError("the vq family quantises its latents: model.loss.equivariance, latent_noise and distillation do not apply to it")
    if family_of(autoencoder).video and (loss.equivariance.probability > 0 or module.teacher is not None or module.discriminator_config.condition_on_latents):
        raise ConfigError("video families: model.loss.equivariance, distillation and model.discriminator.condition_on_latents are image-only")
    if module.teacher is not None and loss.equivariance.probability > 0:
        raise ConfigError("model.loss.equivariance does not apply while distilling (model.loss.distillation.teacher): the latents are the teacher's")
