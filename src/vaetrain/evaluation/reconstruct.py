"""Reconstructing images of any size (padding to the downsampling factor, tiling for very large images); what
`vaetrain recon` does with files and folders is `evaluation.recon`.

Tiling is diffusers' (`AutoencoderKL.enable_tiling`): overlapping tiles, encoded and decoded separately,
blended linearly across the overlap so that no seam shows (tests/evaluation/test_reconstruct.py measures
it). Its tile size comes from the model's `sample_size` by default; here it is set explicitly.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from vaetrain.frames import as_clips, as_frames, is_clip
from vaetrain.models.families import decode, downsampling_factor, encode, family_of


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
    padding = (0, pad_w, 0, pad_h) + (0, 0) * (images.ndim - 4)  # clips: not in time
    return F.pad(images, padding, mode=mode), (height, width)


@contextmanager
def tiled(model: nn.Module, config: TilingConfig | None):
    """Switches diffusers' tiling on with the given tile size for the duration, then restores the model."""
    if config is None or not config.enabled:
        yield model
        return
    factor = downsampling_factor(model)
    if config.tile_size % factor:
        raise ValueError(f"tile_size={config.tile_size} is not divisible by the downsampling factor {factor}")
    names = _TILE_ATTRIBUTES.get(type(model).__name__)
    if names is None:  # AutoencoderTiny tiles every image once tiling is on, however small: it runs whole
        yield model
        return
    saved = {name: getattr(model, name) for name in names}
    side, latent_side = config.tile_size, config.tile_size // factor
    stride = max(factor, round(side * (1 - config.overlap)) // factor * factor)
    if "tile_sample_min_size" in names:  # AutoencoderKL: one size and an overlap factor
        values = (True, side, latent_side, config.overlap)
    else:  # AutoencoderDC: sizes and strides per axis
        values = (True, side, side, stride, stride, latent_side, latent_side)
    for name, value in zip(names, values):
        setattr(model, name, value)
    try:
        yield model
    finally:
        for name, value in saved.items():
            setattr(model, name, value)


_TILE_ATTRIBUTES = {
    "AutoencoderKL": ("use_tiling", "tile_sample_min_size", "tile_latent_min_size", "tile_overlap_factor"),
    "AutoencoderKLWan": ("use_tiling", "tile_sample_min_height", "tile_sample_min_width", "tile_sample_stride_height", "tile_sample_stride_width"),
    "AutoencoderDC": (
        "use_tiling",
        "tile_sample_min_height",
        "tile_sample_min_width",
        "tile_sample_stride_height",
        "tile_sample_stride_width",
        "tile_latent_min_height",
        "tile_latent_min_width",
    ),
}


@torch.no_grad()
def encode_decode(model: nn.Module, images: torch.Tensor, tiling: TilingConfig | None = None):
    """(posterior, reconstruction) for images of any size: padded to the downsampling factor, decoded
    from the posterior mode, cropped back to the input's size, in [-1, 1] as the model gives it. Clips
    given to an image autoencoder are reconstructed frame by frame (the posterior is then per frame)."""
    if is_clip(images) and not family_of(model).video:
        posterior, decoded = encode_decode(model, as_frames(images), tiling)
        return posterior, as_clips(decoded, images.shape[2])
    height, width = images.shape[-2:]
    padded, _ = pad_to_multiple(images, downsampling_factor(model))
    with tiled(model, tiling):
        posterior = encode(model, padded)
        decoded = decode(model, posterior.mode())
    return posterior, decoded[..., :height, :width]


def reconstruct(model: nn.Module, images: torch.Tensor, tiling: TilingConfig | None = None) -> torch.Tensor:
    return encode_decode(model, images, tiling)[1]


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)
