"""Networks: the autoencoder (diffusers' AutoencoderKL), the PatchGAN discriminator and the EMA copy."""

from vaetrain.models.autoencoder import AutoencoderConfig, build_autoencoder, downsampling_factor
from vaetrain.models.discriminator import DiscriminatorConfig, PatchDiscriminator
from vaetrain.models.ema import EMAConfig, build_ema

__all__ = [
    "AutoencoderConfig",
    "DiscriminatorConfig",
    "EMAConfig",
    "PatchDiscriminator",
    "build_autoencoder",
    "build_ema",
    "downsampling_factor",
]
