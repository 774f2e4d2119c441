"""The LightningDataModule: one config block (`data.*`) for where images come from and how they are cut.

It composes a `SampleSource` (which reads the collection: records or shards), the decoders (which cut
images), the bad-file tracker (which counts) and `sample_loader` (which batches); it never asks which kind
of source it has.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Literal

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset

from vaetrain.data.decoding.decode import DEFAULT_MAX_PIXELS
from vaetrain.data.decoding.pixels import Normalization, PixelFormat, measure_bounds
from vaetrain.data.decoding.samples import SampleDecoder, build_decoder, raw_decoder
from vaetrain.data.decoding.transforms import CropPolicy, bucket_transform
from vaetrain.data.decoding.video import ClipDecoder, check_video_settings, clip_spec
from vaetrain.data.quality import BadFileTracker
from vaetrain.data.sample_sets import DEFAULT_BATCH_SIZE, SampleSet, default_num_workers, open_source, sample_loader
from vaetrain.data.sources.spec import Part, SourceKind, SourceSpec, StreamLayout
from vaetrain.data.streams.buckets import check_crop_settings
from vaetrain.data.streams.decoded import first_usable
from vaetrain.data.streams.mixed import MixedStream
from vaetrain.data.streams.schedule import Phase, check_sides, phased_stream, schedule_phases
from vaetrain.errors import ConfigError
from vaetrain.plan import RunPlan


class SampleDataModule(L.LightningDataModule):
    """Images (or, with `frames`, video clips) from a folder, a Hugging Face dataset, WebDataset shards, or the
    bundled samples when `path` is None, cut into an endless, resumable training stream and a fixed
    validation part. Bad files are replaced by the next record and counted (`data/*` metrics); the pixel
    format is recorded in the checkpoint. The README's "Data" section says more of each setting.

    Args:
        path: A folder of images (recursive), a Hugging Face dataset (saved folder, parquet/arrow or Hub id) or a shard pattern; null: the bundled samples.
        source: auto (inferred from path), folder, hf or webdataset.
        resolution: Training crop side (phase 0 of a resolution_schedule) and the validation size.
        batch_size: Micro-batch per process.
        crop: random_crop (native scale), center_crop, or resize_crop (short side to resolution, then a random square).
        buckets: [[height, width], ...]: non-square training crops, each image in the bucket nearest its aspect ratio.
        small_images: upscale or skip (counted) images whose short side is below resolution.
        flip: Random horizontal flips in training.
        val_size: Validation part: a count of evenly spaced files (or shards), or a fraction below 1.
        val_path: A separate validation collection (any kind); then every image of path trains.
        val_source: Kind of val_path (as source).
        val_split: Hugging Face split of val_path.
        val_batch_size: Validation batch (default batch_size).
        file_list: txt (one path a line) or csv selecting part of a folder.
        split: Hugging Face split.
        image_column: Hugging Face column holding the images.
        shuffle_buffer: WebDataset shuffle buffer (samples).
        background: RGB that transparent images are composited on (8-bit RGB format).
        max_image_pixels: Larger images are bad files (decompression bombs).
        max_bad_fraction: Stop when more than this fraction of the samples seen were bad.
        bad_fraction_min_samples: The fraction is taken over at least this many samples.
        num_workers: Loader workers (default: cores - 1, at most 8).
        prefetch_factor: Batches each worker prepares ahead.
        seed: Seed of the training order, crops and flips.
        channels: Image channels: 1, 3 (RGB), 4 (RGBA, alpha kept) or any N (multi-band TIFF, .npy).
        bit_depth: 8 or 16 (uint16 PNG, TIFF, .npy read without loss); a file of another depth is a bad file.
        normalization: range (value_range -> [-1, 1]) or percentile (each channel's measured percentiles -> [-1, 1], clipped).
        value_range: range: the raw [low, high] of every channel (default [0, 2^bit_depth - 1]).
        percentiles: percentile: the lower and upper percentile measured per channel on the training images.
        normalization_images: Training images the percentiles are measured on (evenly spaced).
        display_channels: Channels shown as R, G, B in grids and reports (default: gray for 1 channel, else 0, 1, 2).
        resolution_schedule: [[step, resolution], ...]: training crops change size at these generator steps.
        frames: Clips of this many frames from video files and frame folders (0: images). Wan: 1 + 4k.
        frame_stride: Every frame_stride-th frame of a video makes the clip.
        image_path: With frames: a folder (or dataset) of images trained as one-frame clips beside the videos.
        image_ratio: The fraction of micro-batches that are images from image_path (joint image + video training).
    """

    def __init__(
        self,
        path: str | None = None,
        source: SourceKind = "auto",
        resolution: int = 256,
        batch_size: int = DEFAULT_BATCH_SIZE,
        crop: CropPolicy = "random_crop",
        buckets: list[tuple[int, int]] | None = None,
        small_images: Literal["upscale", "skip"] = "upscale",
        flip: bool = True,
        val_size: int | float = 0.05,
        val_path: str | None = None,
        val_source: SourceKind = "auto",
        val_split: str = "train",
        val_batch_size: int | None = None,
        file_list: str | None = None,
        split: str = "train",
        image_column: str = "image",
        shuffle_buffer: int = 1000,
        background: tuple[int, int, int] = (255, 255, 255),
        max_image_pixels: int = DEFAULT_MAX_PIXELS,
        max_bad_fraction: float = 0.01,
        bad_fraction_min_samples: int = 500,
        num_workers: int | None = None,
        prefetch_factor: int | None = None,
        seed: int = 0,
        channels: int = 3,
        bit_depth: int = 8,
        normalization: Normalization = "range",
        value_range: tuple[float, float] | None = None,
        percentiles: tuple[float, float] = (0.5, 99.5),
        normalization_images: int = 256,
        display_channels: tuple[int, int, int] | None = None,
        resolution_schedule: list[tuple[int, int]] | None = None,
        frames: int = 0,
        frame_stride: int = 1,
        image_path: str | None = None,
        image_ratio: float = 0.0,
    ) -> None:
        super().__init__()
        value_range, display = (tuple(v) if v else None for v in (value_range, display_channels))
        self.pixels = PixelFormat(channels, bit_depth, normalization, value_range, tuple(percentiles), display=display)
        self.normalization_images = normalization_images
        self.resolution_schedule = [tuple(entry) for entry in resolution_schedule] if resolution_schedule else None
        schedule_phases(resolution, self.resolution_schedule)  # bad entries fail here, in one line
        for key, value in (("resolution", resolution), ("batch_size", batch_size)):
            if value <= 0:
                raise ConfigError(f"data.{key} must be positive, got {value}")
        self.clip = clip_spec(frames, frame_stride)
        self.frames = frames  # as configured: the run's plan records the longest clip (`vaetrain.plan.longest_clip`)
        videos = self.clip is not None
        spec = SourceSpec(path, source, split, image_column, file_list, val_size=0 if val_path else val_size, videos=videos)
        self.source = open_source(spec)
        self.val_source = open_source(SourceSpec(val_path, val_source, val_split, image_column, val_size=0, videos=videos)) if val_path else None
        check_video_settings(self.clip, buckets, self.resolution_schedule, self.pixels, image_path, image_ratio)
        self.image_source, self.image_ratio = (open_source(SourceSpec(image_path, val_size=0)), image_ratio) if image_ratio else (None, 0.0)
        if self.image_source is not None and "webdataset" in (self.source.spec.kind, self.image_source.spec.kind):
            raise ConfigError("data.image_ratio mixes folders or datasets (read by position); WebDataset shards are read in order")
        self.buckets = [tuple(b) for b in buckets] if buckets else None
        check_crop_settings(self.buckets, crop, self.resolution_schedule, self.source)
        self.resolution = resolution
        self.batch_size = batch_size  # as configured; the run's micro-batch is the plan's (`micro_batch`)
        self.plan: RunPlan | None = None  # handed over by the training module's set-up (`vaetrain.plan`)
        self.crop, self.small_images, self.flip = crop, small_images, flip
        self.val_batch_size, self.shuffle_buffer = val_batch_size or batch_size, shuffle_buffer
        self.background, self.max_image_pixels = tuple(background), max_image_pixels
        self.num_workers = default_num_workers() if num_workers is None else num_workers
        self.prefetch_factor, self.seed, self.start_sample = prefetch_factor, seed, 0
        self.tracker = BadFileTracker(max_bad_fraction, bad_fraction_min_samples)
        self._validation_checked = False  # validation images decoded once at start-up, bad ones left out

    def describe(self) -> SampleSet:
        """What a checkpoint records of this data: the source and how evaluation decodes it."""
        return SampleSet(self.source.spec, self.resolution, self.background, self.max_image_pixels, self.pixels, clip=self.clip)

    def describe_validation(self) -> tuple[SampleSet, str]:
        """The validation images as evaluation reads them, and which part of their source."""
        spec, part = (self.val_source.spec, "all") if self.val_source is not None else (self.source.spec, "val")
        return SampleSet(spec, self.resolution, self.background, self.max_image_pixels, self.pixels, clip=self.clip), part

    def phases(self) -> list[Phase]:
        """The training phases: `resolution` from step 0, then each `resolution_schedule` entry."""
        return schedule_phases(self.resolution, self.resolution_schedule, self.plan and self.plan.phase_batch_sizes, self.micro_batch)

    @property
    def micro_batch(self) -> int:
        """The run's micro-batch: the plan's (a memory budget may change it), else `batch_size`."""
        return self.plan.micro_batch if self.plan is not None and self.plan.micro_batch else self.batch_size

    def training_sides(self) -> list[int]:
        """Every side a training crop has (all phases, all buckets)."""
        return [phase.resolution for phase in self.phases()] + [side for bucket in self.buckets or [] for side in bucket]

    def check_resolution(self, factor: int) -> None:
        """Fails early when the autoencoder cannot reconstruct at this size."""
        check_sides(self.phases(), self.buckets, factor)

    def prepare_split(self) -> None:
        """Lists the collections and splits them (one-line errors for missing files, columns, shards)."""
        for source in (self.source, self.image_source, self.val_source):
            if source is not None:
                source.prepare()
        if not self.pixels.measured:  # percentiles, on up to `normalization_images` evenly spaced training images
            raw = self.source.images("train", raw_decoder(self.decoder(train=False).options), max_items=self.normalization_images)
            self.pixels = measure_bounds(self.pixels, (sample["pixels"] for sample in raw if sample["pixels"] is not None))

    def setup(self, stage: str | None = None) -> None:
        self.prepare_split()
        if stage in ("fit", "validate") and not self._validation_checked:
            source, part, key = (self.val_source, "all", "data.val_path") if self.val_source is not None else (self.source, "val", "data.path")
            self.tracker.validation_checked(*source.keep_usable(part, self.decoder(train=False)), key)
            self._validation_checked = True

    def set_start_sample(self, samples_seen: int) -> None:
        """Resume after `samples_seen` images of all processes together (restored from a checkpoint)."""
        self.start_sample = samples_seen

    def decoder(self, *, train: bool, resolution: int | None = None, images: bool = False) -> SampleDecoder:
        """Clips with `data.frames` (unless `images`: joint training's images), else images, cut as configured."""
        side, common = resolution or self.resolution, {"crop": self.crop, "flip": self.flip, "background": self.background, "max_pixels": self.max_image_pixels}
        if self.clip is not None and not images:
            return ClipDecoder(self.clip, side, train=train, **common)
        return build_decoder(side, train=train, pixels=self.pixels, small_images=self.small_images, **common)

    def samples(self, part: Part, *, train: bool, max_items: int | None = None, rank: int = 0, world_size: int = 1) -> Dataset | IterableDataset:
        """Decoded images of `part`, with the training (augmenting) or evaluation transform; "val" reads the
        separate validation source when there is one."""
        source, part = (self.val_source, "all") if part == "val" and self.val_source is not None else (self.source, part)
        return source.images(part, self.decoder(train=train), rank=rank, world_size=world_size, max_items=max_items)

    def train_dataloader(self) -> DataLoader:
        rank, world_size = self._rank_and_world_size()
        layout = StreamLayout(self.micro_batch, self.seed, rank, world_size, self.start_sample, self.num_workers, self.shuffle_buffer)
        if self.resolution_schedule:  # G = phase 0's micro-batch x the plan's accumulation x processes
            accumulate = self.plan.accumulate if self.plan is not None else 1
            stream = phased_stream(self.source, lambda side: self.decoder(train=True, resolution=side), self.phases(), layout, accumulate)
            return sample_loader(stream, None, self.num_workers, self.prefetch_factor)
        stream = self.source.train_samples(self.decoder(train=True), layout, self._bucket_decoders())
        if self.image_source is not None:  # joint image + video training (`streams/mixed.py`)
            images = self.image_source.train_samples(self.decoder(train=True, images=True), layout)
            return sample_loader(MixedStream(stream, images, self.image_ratio, layout), None, self.num_workers, self.prefetch_factor)
        return sample_loader(stream, self.micro_batch, self.num_workers, self.prefetch_factor)

    def val_dataloader(self) -> DataLoader:
        rank, world_size = self._rank_and_world_size()
        dataset = self.samples("val", train=False, rank=rank, world_size=world_size)
        return sample_loader(dataset, self.val_batch_size, self.num_workers, self.prefetch_factor)

    def fixed_images(self, count: int) -> torch.Tensor:
        """Center crops of the first `count` validation images (then training images if too few): the
        same inputs in every reconstruction grid."""
        images: list[torch.Tensor] = []
        for part in ("val", "train"):
            images += [sample["pixels"] for sample in first_usable(self.samples(part, train=False), count - len(images))]
        return torch.stack(images)

    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Counts what the loaders skipped (`BadFileTracker.take`) and hands the module a tensor; validation
        images are the same every time: not counted again."""
        if not isinstance(batch, dict):
            return batch
        validating = self.trainer is not None and not self.trainer.training
        return batch["pixels"] if validating else self.tracker.take(batch, self.source, self.trainer)

    def state_dict(self) -> dict[str, Any]:
        return self.tracker.state_dict() | {"pixels": self.pixels.as_dict()} | self.source.state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.tracker.load_state_dict(state_dict)
        if "pixels" in state_dict:  # the bounds the run measured when it started, whatever the data holds now
            self.pixels = PixelFormat.from_dict(state_dict["pixels"])
        self.source.load_state_dict(state_dict)

    def adopt_former_state(self, checkpoint: dict[str, Any]) -> None:
        """Lightning files a data module's state under its class name: state that a checkpoint written before
        the rename holds under `ImageDataModule` moves to this name before it is restored."""
        if "ImageDataModule" in checkpoint:
            checkpoint.setdefault(type(self).__qualname__, checkpoint.pop("ImageDataModule"))

    def _bucket_decoders(self):
        options = replace(self.decoder(train=True).options, min_short_side=None)
        return [(h, w, SampleDecoder(bucket_transform(h, w, flip=self.flip, pixels=self.pixels), options)) for h, w in self.buckets or []] or None

    def _rank_and_world_size(self) -> tuple[int, int]:
        return (self.trainer.global_rank, self.trainer.world_size) if self.trainer is not None else (0, 1)
