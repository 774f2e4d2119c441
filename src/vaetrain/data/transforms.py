"""Crops to a fixed square size that the autoencoder's downsampling divides, scaled to [-1, 1]."""

from __future__ import annotations

import math
from typing import Literal

import torch
from PIL import Image
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

CropPolicy = Literal["random_crop", "center_crop", "resize_crop"]


class ResizeIfSmaller(torch.nn.Module):
    """Upscales an image whose short side is below `size` so that a crop of `size` fits; larger ones pass."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size

    def forward(self, image: Image.Image) -> Image.Image:
        if min(image.size) >= self.size:
            return image
        return TF.resize(image, self.size, interpolation=v2.InterpolationMode.BICUBIC, antialias=True)


def image_transform(resolution: int, *, train: bool, flip: bool = True, crop: CropPolicy = "random_crop") -> v2.Compose:
    """Training follows `crop`: `random_crop` / `center_crop` cut at native scale (upscaling only images
    that are too small), `resize_crop` resizes the short side to `resolution` and then crops randomly.
    Validation always resizes the short side and center-crops (the convention of published tables)."""
    resize = v2.Resize(resolution, interpolation=v2.InterpolationMode.BICUBIC, antialias=True)
    if not train:
        geometry = [resize, v2.CenterCrop(resolution)]
    elif crop == "resize_crop":
        geometry = [resize, v2.RandomCrop(resolution)]
    elif crop == "center_crop":
        geometry = [ResizeIfSmaller(resolution), v2.CenterCrop(resolution)]
    else:
        geometry = [ResizeIfSmaller(resolution), v2.RandomCrop(resolution)]
    if train and flip:
        geometry.append(v2.RandomHorizontalFlip())
    return v2.Compose(
        [
            *geometry,
            v2.PILToTensor(),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize([0.5, 0.5, 0.5], [0.5, 0.5, 0.5]),
        ]
    )


def decodes_at_reduced_size(train: bool, crop: CropPolicy) -> bool:
    """Whether the pipeline resizes anyway, so a JPEG may be decoded smaller (draft mode) first."""
    return not train or crop == "resize_crop"


class ResizeToCover(torch.nn.Module):
    """Scales an image (up or down) to the smallest size that covers height x width."""

    def __init__(self, height: int, width: int) -> None:
        super().__init__()
        self.height, self.width = height, width

    def forward(self, image: Image.Image) -> Image.Image:
        width, height = image.size
        scale = max(self.height / height, self.width / width)
        size = (max(self.height, math.ceil(height * scale - 1e-6)), max(self.width, math.ceil(width * scale - 1e-6)))
        return TF.resize(image, list(size), interpolation=v2.InterpolationMode.BICUBIC, antialias=True)


def bucket_transform(height: int, width: int, *, flip: bool = True) -> v2.Compose:
    """Training transform of one aspect-ratio bucket: cover height x width, then a random crop of it."""
    geometry: list[torch.nn.Module] = [ResizeToCover(height, width), v2.RandomCrop((height, width))]
    if flip:
        geometry.append(v2.RandomHorizontalFlip())
    return v2.Compose(
        [*geometry, v2.PILToTensor(), v2.ToDtype(torch.float32, scale=True), v2.Normalize([0.5] * 3, [0.5] * 3)]
    )
