"""AutoencoderKLWan (Wan 2.1's video VAE; Qwen-Image's shares the design): causal 3D convolutions, a
diagonal Gaussian posterior, clips (B, C, T, H, W) of 1 + 4k frames in, 1 + k latent frames out (4x in
time, 8x in space for Wan 2.1). Its pipelines read per-channel `latents_mean` / `latents_std`.

diffusers' class has no gradient checkpointing (`_supports_gradient_checkpointing = False`): it encodes a
clip chunk by chunk through mutable feature caches, so a recomputed chunk would see a later chunk's caches.
With `gradient_checkpointing` on, encode and decode run `wan_chunks`' loop instead, where each chunk takes its
caches in and gives them out, and is checkpointed; with gradients off (validation, `recon`) diffusers' own.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vaetrain.errors import ConfigError
from vaetrain.models.families.base import Posterior, tile_grid
from vaetrain.models.families.kl import KLFamily, gaussian_posterior
from vaetrain.models.families.wan_chunks import checkpointed_decode, checkpointed_moments


class WanFamily(KLFamily):
    """AutoencoderKL's posterior, encoder modules and FSDP units; its own build, layout and chunked decoder."""

    name = "wan"
    class_name = "AutoencoderKLWan"
    video = True
    latent_conventions = ("per_channel",)

    def build(self, config) -> nn.Module:
        from diffusers import AutoencoderKLWan

        base = config.block_out_channels[0]
        if any(c % base for c in config.block_out_channels):
            raise ConfigError(f"model.autoencoder.block_out_channels {config.block_out_channels}: the wan family needs multiples of the first")
        architecture = dict(config.architecture or {})
        levels = len(config.block_out_channels)
        default = [False] * max(levels - 3, 0) + [True] * min(levels - 1, 2)  # Wan 2.1: [False, True, True]
        temporal = list(architecture.pop("temperal_downsample", default))
        if len(temporal) != levels - 1:
            raise ConfigError(f"model.autoencoder.architecture.temperal_downsample needs {levels - 1} entries (one per downsampling), got {temporal}")
        return AutoencoderKLWan(
            base_dim=base,
            dim_mult=[c // base for c in config.block_out_channels],
            num_res_blocks=config.layers_per_block,
            z_dim=config.latent_channels,
            temperal_downsample=temporal,
            in_channels=config.in_channels,
            out_channels=config.out_channels,
            latents_mean=[0.0] * config.latent_channels,  # measured by the export
            latents_std=[1.0] * config.latent_channels,
            scale_factor_temporal=2 ** sum(temporal),
            scale_factor_spatial=2 ** (levels - 1),
            **architecture,
        )

    def set_gradient_checkpointing(self, model, enabled: bool) -> None:
        """The flags diffusers' encoder and decoder carry (and `is_gradient_checkpointing` reads) but do not
        use themselves; `encode` and `decode` read them."""
        model.encoder.gradient_checkpointing = model.decoder.gradient_checkpointing = enabled

    def is_gradient_checkpointing(self, model) -> bool:
        return bool(model.encoder.gradient_checkpointing)

    def encode(self, model, images) -> Posterior:
        if not (model.encoder.gradient_checkpointing and torch.is_grad_enabled()):
            return super().encode(model, images)
        return gaussian_posterior(checkpointed_moments(model, images))

    def decode(self, model, latents) -> torch.Tensor:
        if not (model.decoder.gradient_checkpointing and torch.is_grad_enabled()):
            return super().decode(model, latents)
        return checkpointed_decode(model, latents)

    decoder_clamps = True  # `_decode`: torch.clamp(out, -1, 1)

    def last_conv_chunk(self, conv, args) -> tuple[torch.Tensor, bool]:
        """`WanCausalConv3d.forward`'s own padding: the cached frames of the previous chunks in front (none
        at a decode's first chunk), the rest of the causal padding as zeros."""
        x, cache = args[0], (args[1] if len(args) > 1 else None)
        padding = list(conv._padding)
        if cache is not None and padding[4] > 0:
            x = torch.cat([cache.to(x.device), x], dim=2)
            padding[4] -= cache.shape[2]
        return F.pad(x, padding), cache is None

    def latent_channels(self, model) -> int:
        return model.config.z_dim

    def downsampling_factor(self, model) -> int:
        patch = model.config.patch_size or 1
        return 2 ** (len(model.config.dim_mult) - 1) * patch

    def temporal_factor(self, model) -> int:
        return 2 ** sum(model.config.temperal_downsample)

    def width(self, model) -> int:
        return model.config.base_dim

    def describe(self, model) -> str:
        config = model.config
        return (
            f"AutoencoderKLWan, base_dim {config.base_dim}, dim_mult {list(config.dim_mult)}, z_dim {config.z_dim}, "
            f"{self.temporal_factor(model)}x temporal / {self.downsampling_factor(model)}x spatial compression"
        )

    def frame_chunk(self, model) -> int:
        """diffusers' encoder reads the first frame alone, then chunks of 4 frames (`_encode`), whatever the
        temporal compression."""
        return 4

    def chunks(self, model):
        from vaetrain.models.families.wan_chunks import WanChunks

        return WanChunks(model)

    def coder_calls(self, model, shape) -> int | None:
        """`_encode`: the encoder per tile per chunk (the first frame, then 4 at a time), on patchified sides;
        `_decode`: the decoder per tile per latent frame."""
        frames, height, width = shape[-3:]
        patch, factor = model.config.patch_size or 1, self.downsampling_factor(model)
        encodes = tile_grid(model, height // patch, width // patch) * (1 + (frames - 1) // 4)
        latent_frames = 1 + (frames - 1) // self.temporal_factor(model)
        return encodes + tile_grid(model, height // factor, width // factor, model.spatial_compression_ratio) * latent_frames
