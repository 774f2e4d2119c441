"""AutoencoderTiny (TAESD): a deterministic ~1 M-parameter autoencoder whose latents match a teacher VAE's
scaled latents (`vaetrain distill`).

diffusers' `DecoderTiny` computes tanh(z / 3) * 3, its layers, then x * 2 - 1: the reconstruction is an
affine function of the last convolution's output (the adaptive weight's ratio of two gradient norms at that
layer is unchanged by the factor 2). Gradient checkpointing is not offered: diffusers' `EncoderTiny` skips
its [-1, 1] -> [0, 1] input scaling on that path (diffusers 0.36), so it would train another function.
"""

from __future__ import annotations

from torch import nn

from vaetrain.models.families.base import Family, Posterior


class TinyFamily(Family):
    name = "tiny"
    class_name = "AutoencoderTiny"
    gradient_checkpointing = False  # see the module docstring
    conv_in_prefixes = ()  # numbered layers only

    def build(self, config) -> nn.Module:
        from diffusers import AutoencoderTiny

        return AutoencoderTiny(
            in_channels=config.in_channels, out_channels=config.out_channels, latent_channels=config.latent_channels, **(config.architecture or {})
        )

    def encode(self, model, images) -> Posterior:
        return Posterior(model.encode(images).latents)

    def last_conv(self, model) -> nn.Conv2d:
        return model.decoder.layers[-1]

    def set_last_conv(self, model, conv: nn.Conv2d) -> None:
        model.decoder.layers[-1] = conv

    def first_conv(self, model) -> nn.Conv2d:
        return model.encoder.layers[0]

    def set_first_conv(self, model, conv: nn.Conv2d) -> None:
        model.encoder.layers[0] = conv

    def downsampling_factor(self, model) -> int:
        return 2 ** (len(model.config.encoder_block_out_channels) - 1)

    def width(self, model) -> int:
        return model.config.encoder_block_out_channels[0]

    def shard_units(self, model) -> list[nn.Module]:
        return [model.encoder, model.decoder]

    def describe(self, model) -> str:
        config = model.config
        return (
            f"AutoencoderTiny, encoder {list(config.encoder_block_out_channels)} x {list(config.num_encoder_blocks)}, "
            f"decoder {list(config.decoder_block_out_channels)} x {list(config.num_decoder_blocks)}"
        )
