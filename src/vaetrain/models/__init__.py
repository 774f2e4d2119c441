"""Networks: the autoencoder of any family (`families`: diffusers' AutoencoderKL, AutoencoderTiny,
AutoencoderDC; built, loaded or rebuilt from weights), its latent normalisation convention
(`latent_space`), the vq family's quantiser (`quantizer`), the PatchGAN and VGG16 discriminators and the EMA
copy.

May import: `vaetrain.errors` and third-party packages only (never losses, data, checkpoints, evaluation,
training, export or the command line).
"""

from vaetrain.models.autoencoder import AutoencoderConfig, build_autoencoder, downsampling_factor, with_deterministic_posterior
from vaetrain.models.discriminator import DiscriminatorConfig, PatchDiscriminator, build_discriminator
from vaetrain.models.ema import EMAConfig, build_ema
from vaetrain.models.vgg_discriminator import VGGDiscriminator

__all__ = [
    "AutoencoderConfig",
    "DiscriminatorConfig",
    "EMAConfig",
    "PatchDiscriminator",
    "VGGDiscriminator",
    "build_autoencoder",
    "build_discriminator",
    "build_ema",
    "downsampling_factor",
    "with_deterministic_posterior",
]
