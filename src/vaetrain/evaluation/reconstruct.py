"""Reconstructing images of any size: padding to the downsampling factor, tiling for very large images.

Tiling is diffusers' (`AutoencoderKL.enable_tiling`): overlapping tiles, encoded and decoded separately,
blended linearly across the overlap so that no seam shows (tests/evaluation/test_reconstruct.py measures
it). Its tile size comes from the model's `sample_size` by default; here it is set explicitly.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL

from vaetrain.models.autoencoder import downsampling_factor


@dataclass
class TilingConfig:
    """Images with a side above `tile_size` pixels are processed in `tile_size` tiles that overlap by
    `overlap` of their side. `tile_size` must be divisible by the downsampling factor."""

    tile_size: int = 512
    overlap: float = 0.25
    enabled: bool = True


def pad_to_multiple(images: torch.Tensor, factor: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """Pads bottom/right by reflection (replicate where the image is too small to reflect) so both sides
    divide by `factor`; returns the original (height, width) to crop back to."""
    height, width = images.shape[-2:]
    pad_h, pad_w = (-height) % factor, (-width) % factor
    if pad_h == 0 and pad_w == 0:
        return images, (height, width)
    mode = "reflect" if pad_h < height and pad_w < width else "replicate"
    return F.pad(images, (0, pad_w, 0, pad_h), mode=mode), (height, width)


@contextmanager
def tiled(model: AutoencoderKL, config: TilingConfig | None):
    """Switches diffusers' tiling on with the given tile size for the duration, then restores the model."""
    if config is None or not config.enabled:
        yield model
        return
    factor = downsampling_factor(model)
    if config.tile_size % factor:
        raise ValueError(f"tile_size={config.tile_size} is not divisible by the downsampling factor {factor}")
    saved = (model.use_tiling, model.tile_sample_min_size, model.tile_latent_min_size, model.tile_overlap_factor)
    model.use_tiling = True
    model.tile_sample_min_size = config.tile_size
    model.tile_latent_min_size = config.tile_size // factor
    model.tile_overlap_factor = config.overlap
    try:
        yield model
    finally:
        model.use_tiling, model.tile_sample_min_size, model.tile_latent_min_size, model.tile_overlap_factor = saved


@torch.no_grad()
def encode_decode(model: AutoencoderKL, images: torch.Tensor, tiling: TilingConfig | None = None):
    """(posterior, reconstruction) for images of any size: padded to the downsampling factor, decoded
    from the posterior mode, cropped back to the input's size, in [-1, 1] as the model gives it."""
    height, width = images.shape[-2:]
    padded, _ = pad_to_multiple(images, downsampling_factor(model))
    with tiled(model, tiling):
        posterior = model.encode(padded).latent_dist
        decoded = model.decode(posterior.mode()).sample
    return posterior, decoded[..., :height, :width]


def reconstruct(model: AutoencoderKL, images: torch.Tensor, tiling: TilingConfig | None = None) -> torch.Tensor:
    return encode_decode(model, images, tiling)[1]
