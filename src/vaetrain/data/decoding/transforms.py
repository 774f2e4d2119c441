"""Crops to a fixed size that the autoencoder's downsampling divides, scaled to [-1, 1].

Geometry runs on uint8 tensors right after decoding: torchvision's vectorised uint8 resize is about 4x
faster than Pillow's at these sizes (benchmarks/data_throughput.py).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from PIL import Image
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from vaetrain.data.decoding.pixels import PixelFormat
from vaetrain.errors import ConfigError

CropPolicy = Literal["random_crop", "center_crop", "resize_crop"]
EvalCrop = Literal["resize_crop", "adm"]
"""Evaluation's square: the short side resized and centre-cropped (torchvision, bicubic, antialiased), or
ADM's `center_crop_arr` (the ImageNet protocol of most published rFID tables)."""
_TO_SIGNED_FLOAT = (v2.ToDtype(torch.float32, scale=True), v2.Normalize([0.5, 0.5, 0.5], [0.5, 0.5, 0.5]))


class Normalise(torch.nn.Module):
    """Raw values (a float (C, H, W) tensor from `arrays.read_pixels`) -> [-1, 1] by the pixel format."""

    def __init__(self, pixels: PixelFormat) -> None:
        super().__init__()
        self.pixels = pixels

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.pixels.normalise(image)


def _framed(geometry: list[torch.nn.Module], pixels: PixelFormat) -> v2.Compose:
    """8-bit RGB: PIL -> uint8 tensor, geometry, [-1, 1] (uint8 resizing is fast). Other formats arrive as
    raw float tensors: geometry, then the format's normalisation."""
    if pixels.is_rgb8:
        return v2.Compose([v2.PILToTensor(), *geometry, *_TO_SIGNED_FLOAT])
    return v2.Compose([*geometry, Normalise(pixels)])


class ResizeIfSmaller(torch.nn.Module):
    """Upscales an image whose short side is below `size` so that a crop of `size` fits; larger ones pass."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        if min(TF.get_size(image)) >= self.size:
            return image
        return TF.resize(image, self.size, interpolation=v2.InterpolationMode.BICUBIC, antialias=True)


class ADMCenterCrop(torch.nn.Module):
    """openai/guided-diffusion, guided_diffusion/image_datasets.py, `center_crop_arr`: halve with BOX filtering
    while the short side is at least twice `size`, resize bicubically so the short side is `size` (each
    side rounded), then cut the centred square (offsets rounded down). PIL in, PIL out."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size

    def forward(self, image: Image.Image) -> Image.Image:
        while min(*image.size) >= 2 * self.size:
            image = image.resize(tuple(x // 2 for x in image.size), resample=Image.BOX)
        scale = self.size / min(*image.size)
        image = image.resize(tuple(round(x * scale) for x in image.size), resample=Image.BICUBIC)
        left, top = (image.size[0] - self.size) // 2, (image.size[1] - self.size) // 2
        return image.crop((left, top, left + self.size, top + self.size))


class ShortSideSquareCrop(torch.nn.Module):
    """Resize the short side to `size`, then crop a size x size square (random or centred), done as one
    resized crop of the original so that only the kept square is resampled."""

    def __init__(self, size: int, *, random: bool) -> None:
        super().__init__()
        self.size = size
        self.random = random

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        height, width = TF.get_size(image)
        side = min(height, width)
        if self.random:
            top = int(torch.randint(0, height - side + 1, ()))
            left = int(torch.randint(0, width - side + 1, ()))
        else:
            top, left = (height - side) // 2, (width - side) // 2
        return TF.resized_crop(image, top, left, side, side, [self.size, self.size], interpolation=v2.InterpolationMode.BICUBIC, antialias=True)


def image_transform(
    resolution: int,
    *,
    train: bool,
    flip: bool = True,
    crop: CropPolicy = "random_crop",
    pixels: PixelFormat = PixelFormat(),
    eval_crop: EvalCrop = "resize_crop",
) -> v2.Compose:
    """Training follows `crop`: `random_crop` / `center_crop` cut at native scale (upscaling only images
    that are too small), `resize_crop` resizes the short side to `resolution` and then crops randomly.
    Validation always resizes the short side and center-crops (the convention of published tables)."""
    if not train and eval_crop == "adm":
        if not pixels.is_rgb8:
            raise ConfigError("ADM's centre crop (the ImageNet protocol) reads 8-bit RGB images only")
        return v2.Compose([ADMCenterCrop(resolution), v2.PILToTensor(), *_TO_SIGNED_FLOAT])
    return _framed(square_geometry(resolution, train=train, flip=flip, crop=crop), pixels)


def square_geometry(resolution: int, *, train: bool, flip: bool = True, crop: CropPolicy = "random_crop") -> list[torch.nn.Module]:
    """The resize / crop / flip steps of `image_transform` on tensors (..., C, H, W): a stack of video
    frames gets one draw of the random crop and flip, the same for every frame."""
    if not train:
        geometry = [ShortSideSquareCrop(resolution, random=False)]
    elif crop == "resize_crop":
        geometry = [ShortSideSquareCrop(resolution, random=True)]
    elif crop == "center_crop":
        geometry = [ResizeIfSmaller(resolution), v2.CenterCrop(resolution)]
    else:
        geometry = [ResizeIfSmaller(resolution), v2.RandomCrop(resolution)]
    if train and flip:
        geometry.append(v2.RandomHorizontalFlip())
    return geometry


def clip_transform(resolution: int, *, train: bool, flip: bool = True, crop: CropPolicy = "random_crop") -> v2.Compose:
    """uint8 frames (T, 3, H, W) -> float (3, T, H, W) in [-1, 1], cropped alike (`square_geometry`)."""
    return v2.Compose([*square_geometry(resolution, train=train, flip=flip, crop=crop), *_TO_SIGNED_FLOAT, FramesLast()])


class FramesLast(torch.nn.Module):
    """(T, C, H, W) -> (C, T, H, W), the layout of diffusers' video autoencoders."""

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        return frames.permute(1, 0, 2, 3).contiguous()


def native_transform(pixels: PixelFormat = PixelFormat()) -> v2.Compose:
    """The whole image at its own size (evaluation at native resolution pads it later)."""
    return _framed([], pixels)


def decodes_at_reduced_size(train: bool, crop: CropPolicy) -> bool:
    """Whether the pipeline resizes anyway, so a JPEG may be decoded smaller (draft mode) first."""
    return not train or crop == "resize_crop"


class ResizeToCover(torch.nn.Module):
    """Scales an image (up or down) to the smallest size that covers height x width."""

    def __init__(self, height: int, width: int) -> None:
        super().__init__()
        self.height, self.width = height, width

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        height, width = TF.get_size(image)
        scale = max(self.height / height, self.width / width)
        size = (max(self.height, math.ceil(height * scale - 1e-6)), max(self.width, math.ceil(width * scale - 1e-6)))
        return TF.resize(image, list(size), interpolation=v2.InterpolationMode.BICUBIC, antialias=True)


def bucket_transform(height: int, width: int, *, flip: bool = True, pixels: PixelFormat = PixelFormat()) -> v2.Compose:
    """Training transform of one aspect-ratio bucket: cover height x width, then a random crop of it."""
    geometry: list[torch.nn.Module] = [ResizeToCover(height, width), v2.RandomCrop((height, width))]
    if flip:
        geometry.append(v2.RandomHorizontalFlip())
    return _framed(geometry, pixels)
