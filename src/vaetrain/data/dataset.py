"""Decoded, transformed samples from any record source, with bad files replaced and reported."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from PIL import Image
from torch.utils.data import Dataset

from vaetrain.data.arrays import NPY_MAGIC, read_pixels, read_rgb8
from vaetrain.data.decode import DEFAULT_MAX_PIXELS, BadImage, decode_image
from vaetrain.data.pixels import PixelFormat
from vaetrain.data.records import RecordSource
from vaetrain.data.transforms import CropPolicy, decodes_at_reduced_size, image_transform, native_transform
from vaetrain.errors import ConfigError


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
    """(encoded bytes or path, name) -> {"image": tensor or None, "bad": [(name, reason)], "small": 0/1}."""

    def __init__(self, transform: Callable[[Image.Image], torch.Tensor], options: DecodeOptions | None = None) -> None:
        self.transform = transform
        self.options = options or DecodeOptions()

    def __call__(self, data: bytes | Path, name: str) -> dict:
        options = self.options
        try:
            image = self.read(data)
            size = image.size if isinstance(image, Image.Image) else image.shape[-2:]
            if options.skip_smaller_than and min(size) < options.skip_smaller_than:
                return {"image": None, "bad": [], "small": 1}
            return {"image": self.transform(image), "bad": [], "small": 0}
        except BadImage as error:
            return {"image": None, "bad": [(name, str(error))], "small": 0}
        except (OSError, ValueError, RuntimeError) as error:  # unreadable file, broken transform input
            return {"image": None, "bad": [(name, f"{type(error).__name__}: {error}")], "small": 0}

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
) -> SampleDecoder:
    """Decode + transform: training augments by the `crop` policy; evaluation resizes the short side and
    center-crops (published tables' convention), or keeps each image whole when `resolution` is "native"."""
    if resolution == "native":
        return SampleDecoder(native_transform(pixels), DecodeOptions(background=background, max_pixels=max_pixels, pixels=pixels))
    options = DecodeOptions(
        min_short_side=resolution if decodes_at_reduced_size(train, crop) else None,
        skip_smaller_than=resolution if train and small_images == "skip" else None,
        background=background,
        max_pixels=max_pixels,
        pixels=pixels,
    )
    transform = image_transform(resolution, train=train, flip=flip, crop=crop if train else "resize_crop", pixels=pixels)
    return SampleDecoder(transform, options)


def merge_reports(unusable: dict, into: dict) -> dict:
    """Moves an unusable sample's reports onto the next usable sample."""
    into["bad"] = unusable["bad"] + into["bad"]
    into["small"] = unusable["small"] + into["small"]
    return into


class DecodedImages(Dataset):
    """`dataset[i]` is {"image": tensor, "bad": [(name, reason)], "small": n}.

    Training (`replace_bad`): a record that cannot be used is replaced by the next one (i + 1, i + 2, ...):
    the replacement is deterministic, so resumed and multi-worker runs stay exact, and the skipped names
    travel with the sample to the main process, where `BadFileTracker` counts them. Evaluation
    (`replace_bad=False`): the sample's image is None, so `collate_samples` leaves it out (and keeps its
    report) and no image is measured twice.
    """

    def __init__(self, records: RecordSource, decoder: SampleDecoder, max_attempts: int = 64, *, replace_bad: bool = True) -> None:
        self.records = records
        self.decoder = decoder
        self.max_attempts = max_attempts
        self.replace_bad = replace_bad

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict:
        if not self.replace_bad:
            return self.decoder(self.records.load(index), self.records.name(index))
        reports = {"bad": [], "small": 0}
        for attempt in range(min(self.max_attempts, len(self))):
            current = (index + attempt) % len(self)
            sample = self.decoder(self.records.load(current), self.records.name(current))
            if sample["image"] is not None:
                return merge_reports(reports, sample)
            reports = merge_reports(reports, sample)
        examples = "; ".join(f"{n}: {r}" for n, r in reports["bad"][:3]) or f"{reports['small']} images smaller than the crop"
        raise ConfigError(f"data: {self.max_attempts} images in a row from {self.records.name(index)} were unusable ({examples})")


def collate_samples(samples: list[dict]) -> dict:
    """Stacks the images (samples without one are left out: an evaluation batch may hold fewer, or none);
    concatenates the bad-file reports so the main process sees every one; keeps the furthest stream
    position of each reader (WebDataset resume)."""
    positions: dict[int, tuple[int, int]] = {}
    for sample in samples:
        if "reader" in sample:
            positions[sample["reader"]] = max(positions.get(sample["reader"], (0, 0)), tuple(sample["position"]))
    images = [s["image"] for s in samples if s["image"] is not None]
    return {
        "image": torch.stack(images) if images else torch.empty(0),
        "bad": [item for s in samples for item in s["bad"]],
        "small": sum(s["small"] for s in samples),
        "positions": positions,
    }
