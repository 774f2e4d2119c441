"""Crops to a fixed square size that the autoencoder's downsampling divides, scaled to [-1, 1]."""

from __future__ import annotations

import torch
from PIL import Image
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF


class ResizeIfSmaller(torch.nn.Module):
    """Upscales an image whose short side is below `size` so that a crop of `size` fits; larger ones pass."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size

    def forward(self, image: Image.Image) -> Image.Image:
        if min(image.size) >= self.size:
            return image
        return TF.resize(image, self.size, interpolation=v2.InterpolationMode.BICUBIC, antialias=True)


def image_transform(resolution: int, *, train: bool, flip: bool = True) -> v2.Compose:
    """Train: random crop (+ flip). Validation: resize the short side, then center crop."""
    if train:
        geometry = [ResizeIfSmaller(resolution), v2.RandomCrop(resolution)]
        if flip:
            geometry.append(v2.RandomHorizontalFlip())
    else:
        geometry = [
            v2.Resize(resolution, interpolation=v2.InterpolationMode.BICUBIC, antialias=True),
            v2.CenterCrop(resolution),
        ]
    return v2.Compose(
        [
            *geometry,
            v2.PILToTensor(),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize([0.5, 0.5, 0.5], [0.5, 0.5, 0.5]),
        ]
    )
