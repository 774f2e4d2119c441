"""AutoencoderDC (deep-compression autoencoder, arXiv 2410.10733): deterministic, 32-64x downsampling with
residual autoencoding (space-to-channel shortcuts around the encoder's and decoder's resolution changes)."""

from __future__ import annotations

from torch import nn

from vaetrain.models.families.base import Family, Posterior


class DCFamily(Family):
    name = "dc"
    class_name = "AutoencoderDC"
    gradient_checkpointing = False  # diffusers' AutoencoderDC does not support it

    def build(self, config) -> nn.Module:
        from diffusers import AutoencoderDC

        return AutoencoderDC(in_channels=config.in_channels, latent_channels=config.latent_channels, **(config.architecture or {}))

    def encode(self, model, images) -> Posterior:
        return Posterior(model.encode(images).latent)

    def downsampling_factor(self, model) -> int:
        return 2 ** (len(model.config.encoder_block_out_channels) - 1)

    def width(self, model) -> int:
        return model.config.encoder_block_out_channels[0]

    def shard_units(self, model) -> list[nn.Module]:
        return [*model.encoder.down_blocks, model.encoder, *model.decoder.up_blocks, model.decoder]

    def describe(self, model) -> str:
        config = model.config
        return f"AutoencoderDC, encoder {list(config.encoder_block_out_channels)}, decoder {list(config.decoder_block_out_channels)}"
