"""Networks: the autoencoder (diffusers' AutoencoderKL, built, loaded or rebuilt from weights), the
PatchGAN discriminator and the EMA copy.

May import: `vaetrain.errors` and third-party packages only (never losses, data, evaluation, training,
export or the command line).
"""

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
