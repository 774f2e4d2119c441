"""AutoencoderKL (Stable Diffusion's VAE, LDM's objective): a diagonal Gaussian posterior."""

from __future__ import annotations

import torch
from torch import nn

from vaetrain.errors import ConfigError
from vaetrain.models.families.base import Family, Posterior


def gaussian_posterior(moments: torch.Tensor) -> Posterior:
    """The posterior of `quant_conv`'s moments (mean, then log-variance, stacked in channels) as diffusers reads
    them (`DiagonalGaussianDistribution`: the log-variance clamped to [-30, 20]); for an encoder run outside
    diffusers' `encode` (Wan's chunks, checkpointed or streamed)."""
    from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution

    posterior = DiagonalGaussianDistribution(moments)
    return Posterior(posterior.mean, posterior.logvar)


def ldm_stack(config, down: str = "DownEncoderBlock2D", up: str = "UpDecoderBlock2D") -> dict:
    """LDM's convolutional encoder/decoder (one down/up block per entry of `block_out_channels`, attention in
    the middle block only), as the keyword arguments diffusers' AutoencoderKL and VQModel share (and, with
    its 3D blocks, AutoencoderKLHunyuanVideo)."""
    if any(c % config.norm_num_groups for c in config.block_out_channels):
        raise ConfigError(
            f"model.autoencoder.block_out_channels {config.block_out_channels} must all be divisible by "
            f"model.autoencoder.norm_num_groups={config.norm_num_groups}"
        )
    levels = len(config.block_out_channels)
    return dict(
        in_channels=config.in_channels,
        out_channels=config.out_channels,
        down_block_types=(down,) * levels,
        up_block_types=(up,) * levels,
        block_out_channels=tuple(config.block_out_channels),
        layers_per_block=config.layers_per_block,
        latent_channels=config.latent_channels,
        norm_num_groups=config.norm_num_groups,
        mid_block_add_attention=config.mid_block_add_attention,
    )


class KLFamily(Family):
    name = "kl"
    class_name = "AutoencoderKL"
    deterministic = False

    latent_conventions = ("scale_shift", "per_channel")  # SD/SD3/FLUX's by default; SDXL-style per channel on request

    def build(self, config) -> nn.Module:
        from diffusers import AutoencoderKL

        return AutoencoderKL(**ldm_stack(config), **(config.architecture or {}))

    def encode(self, model, images) -> Posterior:
        posterior = model.encode(images).latent_dist
        return Posterior(posterior.mean, posterior.logvar)

    def downsampling_factor(self, model) -> int:
        return 2 ** (len(model.config.block_out_channels) - 1)

    def width(self, model) -> int:
        return model.config.block_out_channels[0]

    def encoder_modules(self, model) -> list[nn.Module]:
        return [m for m in (model.encoder, model.quant_conv) if m is not None]

    def shard_units(self, model) -> list[nn.Module]:
        return super().shard_units(model) + [m for m in (model.quant_conv, model.post_quant_conv) if m is not None]

    def describe(self, model) -> str:
        config = model.config
        return f"AutoencoderKL, block_out_channels {list(config.block_out_channels)}, layers_per_block {config.layers_per_block}"
