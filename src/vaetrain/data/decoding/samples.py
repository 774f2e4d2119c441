"""Decoding one sample: (encoded bytes or path, name) -> a transformed tensor, or the reason it is unusable
(`SampleDecoder`), as every source and stream reads it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import torch
from PIL import Image

from vaetrain.data.decoding.arrays import NPY_MAGIC, read_pixels, read_rgb8
from vaetrain.data.decoding.decode import DEFAULT_MAX_PIXELS, BadImage, decode_image
from vaetrain.data.decoding.pixels import PixelFormat
from vaetrain.data.decoding.transforms import CropPolicy, EvalCrop, decodes_at_reduced_size, image_transform, native_transform

IMAGE_TYPES = ("jpg", "jpeg", "png", "webp", "bmp", "tif", "tiff", "npy")
"""What can be decoded, as file extensions and WebDataset keys (the first present key of a sample is read)."""


@dataclass
class DecodeOptions:
    """`min_short_side`: draft-decode JPEGs down to this short side. `skip_smaller_than`: images with a
    shorter short side are skipped (counted) instead of upscaled. `pixels`: channels, bit depth and
    normalisation (8-bit RGB by default)."""

    min_short_side: int | None = None
    skip_smaller_than: int | None = None
    background: tuple[int, int, int] = (255, 255, 255)
    max_pixels: int = DEFAULT_MAX_PIXELS
    pixels: PixelFormat = PixelFormat()


class SampleDecoder:
    """(encoded bytes or path, name) -> {"pixels": tensor or None, "bad": [(name, reason)], "small": 0/1}."""

    types: tuple[str, ...] = IMAGE_TYPES
    """The WebDataset keys it reads (the first present one of a sample)."""

    def __init__(self, transform: Callable[[Image.Image], torch.Tensor], options: DecodeOptions | None = None) -> None:
        self.transform = transform
        self.options = options or DecodeOptions()

    def __call__(self, data: bytes | Path, name: str) -> dict:
        options = self.options
        try:
            image = self.read(data)
            size = image.size if isinstance(image, Image.Image) else image.shape[-2:]
            if options.skip_smaller_than and min(size) < options.skip_smaller_than:
                return {"pixels": None, "bad": [], "small": 1}
            return {"pixels": self.transform(image), "bad": [], "small": 0}
        except BadImage as error:
            return {"pixels": None, "bad": [(name, str(error))], "small": 0}
        except (OSError, ValueError, RuntimeError) as error:  # unreadable file, broken transform input
            return {"pixels": None, "bad": [(name, f"{type(error).__name__}: {error}")], "small": 0}

    def read(self, data: bytes | Path) -> Image.Image | torch.Tensor:
        """8-bit RGB: a PIL image (a .npy array converted); any other format: raw values (`read_pixels`)."""
        options = self.options
        if not options.pixels.is_rgb8:
            return read_pixels(data, options.pixels, options.max_pixels)
        if _is_npy(data):
            return read_rgb8(data, options.max_pixels)
        return decode_image(data, min_short_side=options.min_short_side, background=options.background, max_pixels=options.max_pixels)


def _is_npy(data: bytes | Path) -> bool:
    """Bytes by their signature; a file by its name (no extra open on the 8-bit RGB hot path)."""
    return data.startswith(NPY_MAGIC) if isinstance(data, bytes) else Path(data).suffix.lower() == ".npy"


def build_decoder(
    resolution: int | Literal["native"],
    *,
    train: bool = False,
    crop: CropPolicy = "random_crop",
    flip: bool = True,
    small_images: Literal["upscale", "skip"] = "upscale",
    background: tuple[int, int, int] = (255, 255, 255),
    max_pixels: int = DEFAULT_MAX_PIXELS,
    pixels: PixelFormat = PixelFormat(),
    eval_crop: EvalCrop = "resize_crop",
) -> SampleDecoder:
    """Decode + transform: training augments by the `crop` policy; evaluation resizes the short side and
    center-crops (published tables' convention), or keeps each image whole when `resolution` is "native"."""
    if resolution == "native":
        return SampleDecoder(native_transform(pixels), DecodeOptions(background=background, max_pixels=max_pixels, pixels=pixels))
    options = DecodeOptions(
        min_short_side=resolution if decodes_at_reduced_size(train, crop) and eval_crop != "adm" else None,  # ADM decodes whole images
        skip_smaller_than=resolution if train and small_images == "skip" else None,
        background=background,
        max_pixels=max_pixels,
        pixels=pixels,
    )
    transform = image_transform(resolution, train=train, flip=flip, crop=crop if train else "resize_crop", pixels=pixels, eval_crop=eval_crop)
    return SampleDecoder(transform, options)


def raw_decoder(options: DecodeOptions) -> SampleDecoder:
    """The raw values of each image, whole (no transform, no reduced-size decoding): what percentile
    normalisation is measured on."""
    return SampleDecoder(lambda raw: raw, replace(options, min_short_side=None))
