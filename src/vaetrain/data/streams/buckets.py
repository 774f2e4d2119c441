"""Aspect-ratio buckets: non-square training crops at a fixed pixel budget, one shape per batch."""

from __future__ import annotations

import io
import math
from pathlib import Path

import torch
from PIL import Image, UnidentifiedImageError

from vaetrain.data.sources.records import RecordSource
from vaetrain.data.streams.seeding import derived_seed
from vaetrain.errors import ConfigError

_ROTATED = {5, 6, 7, 8}  # EXIF orientations that swap width and height


def image_size(data: bytes | Path) -> tuple[int, int] | None:
    """(width, height) as displayed, from the header only; None when unreadable."""
    try:
        with Image.open(io.BytesIO(data) if isinstance(data, bytes) else data) as image:
            width, height = image.size
            if image.getexif().get(0x0112) in _ROTATED:
                width, height = height, width
            return width, height
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError, Image.DecompressionBombError):
        return None


def assign_buckets(records: RecordSource, buckets: list[tuple[int, int]]) -> list[list[int]]:
    """Record indices per bucket, by nearest log aspect ratio; unreadable records go to bucket 0 (they
    are replaced and reported when decoded)."""
    ratios = [math.log(width / height) for height, width in buckets]
    members: list[list[int]] = [[] for _ in buckets]
    for index in range(len(records)):
        size = image_size(records.load(index))
        if size is None:
            members[0].append(index)
            continue
        ratio = math.log(size[0] / size[1])
        members[min(range(len(buckets)), key=lambda b: abs(ratios[b] - ratio))].append(index)
    return members


class BucketPlan:
    """Epoch e: every bucket's members permuted from (seed, e) and cut into full batches; the batches of
    all buckets shuffled together. Batch n of the endless sequence is a function of n alone."""

    def __init__(self, members: list[list[int]], batch_size: int, seed: int) -> None:
        self.members = members
        self.batch_size = batch_size
        self.seed = seed
        self.batches_per_epoch = sum(len(m) // batch_size for m in members)
        if self.batches_per_epoch == 0:
            sizes = ", ".join(str(len(m)) for m in members)
            raise ConfigError(f"data.buckets: no bucket holds a full batch of {batch_size} images (bucket sizes: {sizes})")
        self._epoch = -1
        self._batches: list[tuple[int, list[int]]] = []

    def batch(self, number: int) -> tuple[int, list[int]]:
        """(bucket, record indices) of batch `number`."""
        epoch, offset = divmod(number, self.batches_per_epoch)
        if epoch != self._epoch:
            generator = torch.Generator().manual_seed(derived_seed(self.seed, epoch))
            batches = []
            for bucket, members in enumerate(self.members):
                order = [members[i] for i in torch.randperm(len(members), generator=generator).tolist()]
                full = len(order) // self.batch_size * self.batch_size
                batches += [(bucket, order[i : i + self.batch_size]) for i in range(0, full, self.batch_size)]
            self._batches = [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]
            self._epoch = epoch
        return self._batches[offset]


def check_crop_settings(buckets: list[tuple[int, int]] | None, crop: str, schedule, source) -> None:
    """Buckets, the crop policy and a resolution schedule in combinations that work, else one line."""
    if buckets and crop != "random_crop":
        raise ConfigError(
            f"data.crop={crop} does not apply with data.buckets (each image is resized to cover its bucket, then cropped at random); leave it random_crop"
        )
    if buckets and not source.supports_buckets:
        raise ConfigError(f"data.buckets: not supported for {source.spec.kind} sources (image sizes are unknown before reading)")
    if schedule and (buckets or not source.supports_buckets):
        raise ConfigError("data.resolution_schedule: needs square crops from a folder or Hugging Face dataset (not buckets, not shards)")
