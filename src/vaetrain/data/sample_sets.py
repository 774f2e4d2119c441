"""Opening a source (`open_source`), the one DataLoader set-up every reader uses, and `evaluation_samples`,
the plain function that `eval`, `export` and the export callback read samples with (no
LightningDataModule needed)."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset

from vaetrain.data.decoding.decode import DEFAULT_MAX_PIXELS
from vaetrain.data.decoding.pixels import PixelFormat
from vaetrain.data.decoding.samples import build_decoder
from vaetrain.data.decoding.transforms import EvalCrop
from vaetrain.data.decoding.video import ClipDecoder, ClipSpec
from vaetrain.data.sources.record_images import RecordImages
from vaetrain.data.sources.shard_images import ShardImages
from vaetrain.data.sources.spec import Part, SampleSource, SourceSpec
from vaetrain.data.streams.decoded import collate_samples
from vaetrain.errors import ConfigError

DEFAULT_BATCH_SIZE = 4
"""`data.batch_size`'s default, for training's micro-batch and every command that reads images."""


@dataclass(frozen=True)
class Loading:
    """How images are batched for reading: `data.batch_size` and `data.num_workers`, with `fit`'s defaults."""

    batch_size: int = DEFAULT_BATCH_SIZE
    num_workers: int | None = None
    """None: one per spare core, at most 8 (`default_num_workers`)."""

    def of(self) -> dict[str, int | None]:
        """As `evaluation_samples`' keyword arguments."""
        return {"batch_size": self.batch_size, "num_workers": self.num_workers}


def open_source(spec: SourceSpec) -> SampleSource:
    """The reader for `spec`'s kind; cheap (nothing is listed until `prepare`)."""
    spec = spec.resolved()
    if spec.kind not in ("folder", "hf", "webdataset"):
        raise ConfigError(f"data.source: unknown kind {spec.kind!r}; use auto, folder, hf or webdataset")
    if spec.file_list is not None and spec.kind != "folder":
        raise ConfigError(f"data.file_list selects files of a folder; '{spec.path}' is a {spec.kind} source (select a split or shards instead)")
    return ShardImages(spec) if spec.kind == "webdataset" else RecordImages(spec)


@dataclass(frozen=True)
class SampleSet:
    """A collection and how its samples (images, or clips with `clip`) are decoded for evaluation: what a checkpoint records of the data a
    run trained on, so `vaetrain export` measures latent statistics on the same images."""

    source: SourceSpec = field(default_factory=SourceSpec)
    resolution: int | Literal["native"] = 256
    background: tuple[int, int, int] = (255, 255, 255)
    max_image_pixels: int = DEFAULT_MAX_PIXELS
    pixels: PixelFormat = field(default_factory=PixelFormat)
    """Channels, bit depth and normalisation (with measured percentile bounds): the run's, so evaluation
    normalises exactly as training did."""
    eval_crop: EvalCrop = "resize_crop"
    """How a square is cut at `resolution`: resize the short side and centre-crop, or ADM's centre crop."""
    clip: ClipSpec | None = None
    """Videos: the frames of each clip (its first ones when evaluating); None: images."""

    def as_dict(self) -> dict[str, Any]:
        return {
            "source": self.source.as_dict(),
            "resolution": self.resolution,
            "background": list(self.background),
            "max_image_pixels": self.max_image_pixels,
            "pixels": self.pixels.as_dict(),
            "eval_crop": self.eval_crop,
            "clip": asdict(self.clip) if self.clip is not None else None,
        }

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> SampleSet:
        return cls(
            source=SourceSpec.from_dict(values.get("source", {})),
            resolution=values.get("resolution") or 256,
            background=tuple(values.get("background", (255, 255, 255))),
            max_image_pixels=values.get("max_image_pixels", DEFAULT_MAX_PIXELS),
            pixels=PixelFormat.from_dict(values.get("pixels")),
            eval_crop=values.get("eval_crop", "resize_crop"),
            clip=ClipSpec(**values["clip"]) if values.get("clip") else None,
        )


def evaluation_samples(
    images: SampleSet, *, part: Part = "all", max_images: int | None = None, batch_size: int = DEFAULT_BATCH_SIZE, num_workers: int | None = None
) -> DataLoader:
    """Center crops at `images.resolution` (or, "native", whole images one per batch) of up to
    `max_images` evenly spaced images of `part`. Batches are dicts; `pixels_of` takes the tensor out and
    `batch["bad"]` lists the files that could not be used."""
    source = open_source(images.source)
    if images.clip is not None:
        if images.resolution == "native":
            raise ConfigError("clips are evaluated at a square resolution; 'native' applies to images")
        decoder = ClipDecoder(images.clip, images.resolution, train=False, background=images.background, max_pixels=images.max_image_pixels)
    else:
        decoder = build_decoder(
            images.resolution, background=images.background, max_pixels=images.max_image_pixels, pixels=images.pixels, eval_crop=images.eval_crop
        )
    dataset = source.images(part, decoder, max_items=max_images)
    workers = default_num_workers() if num_workers is None else num_workers  # fit's defaults (`Loading`)
    return sample_loader(dataset, 1 if images.resolution == "native" else batch_size, workers)


def sample_loader(dataset: Dataset | IterableDataset, batch_size: int, num_workers: int, prefetch_factor: int | None = None) -> DataLoader:
    """Batches of decoded samples (see `collate_samples`); pinned memory when a GPU is present."""
    return DataLoader(
        dataset,
        batch_size=batch_size,
        num_workers=num_workers,
        pin_memory=torch.cuda.is_available(),
        persistent_workers=num_workers > 0,
        prefetch_factor=prefetch_factor if num_workers > 0 else None,
        collate_fn=collate_samples,
        drop_last=False,
    )


def pixels_of(batch: Any) -> torch.Tensor:
    """The pixel tensor of a loader batch (its `"pixels"`: a dict from `collate_samples`), or a plain tensor as it is."""
    return batch["pixels"] if isinstance(batch, dict) else batch


def default_num_workers() -> int:
    """One worker per spare core, at most 8: decoding keeps pace without starving the training process."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(0, min(8, cores - 1))
