"""The LightningDataModule: one config block (`data.*`) for where images come from and how they are cut."""

from __future__ import annotations

import os
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

import lightning as L
import torch
from torch.utils.data import DataLoader, DistributedSampler

from vaetrain.data.buckets import BucketPlan, assign_buckets
from vaetrain.data.dataset import DecodedImages, DecodeOptions, SampleDecoder, collate_samples
from vaetrain.data.decode import DEFAULT_MAX_PIXELS
from vaetrain.data.folder import sample_images_dir, split_train_val
from vaetrain.data.quality import BadFileTracker
from vaetrain.data.records import FileRecords, RecordSource, folder_files, load_hf_records
from vaetrain.data.stream import ResumableImageStream
from vaetrain.data.transforms import (
    CropPolicy,
    bucket_transform,
    decodes_at_reduced_size,
    image_transform,
    native_transform,
)
from vaetrain.data.webdataset_stream import WebDatasetStream, expand_shards
from vaetrain.errors import ConfigError

Source = Literal["auto", "folder", "hf", "webdataset"]


class ImageDataModule(L.LightningDataModule):
    """Images from a folder (recursive; `file_list` selects a subset), a Hugging Face dataset, or
    WebDataset tar shards (`shards/{00000..00099}.tar`, local or URL), or the bundled samples when
    `path` is None. For shards, `val_size` counts validation shards (the last ones of the sorted list).
    `buckets` ([[height, width], ...]) trains on non-square crops, each image in the bucket nearest its
    aspect ratio (map-style sources; headers are read once at start-up); validation stays square.

    `batch_size` is the micro-batch per process; the training stream is endless and resumable (see
    `ResumableImageStream`), so runs are measured in steps. Bad files are replaced by the next record,
    logged once and counted (`data/*` metrics); more than `max_bad_fraction` of the samples seen stops
    the run. `small_images` says what happens to images whose short side is below `resolution`.
    """

    def __init__(
        self,
        path: str | None = None,
        source: Source = "auto",
        resolution: int = 256,
        batch_size: int = 4,
        crop: CropPolicy = "random_crop",
        buckets: list[tuple[int, int]] | None = None,
        small_images: Literal["upscale", "skip"] = "upscale",
        flip: bool = True,
        val_size: int | float = 0.05,
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
    ) -> None:
        super().__init__()
        if resolution <= 0:
            raise ConfigError(f"data.resolution must be positive, got {resolution}")
        if batch_size <= 0:
            raise ConfigError(f"data.batch_size must be positive, got {batch_size}")
        self.path = path
        self.source = source
        self.resolution = resolution
        self.batch_size = batch_size
        self.crop = crop
        self.buckets = [tuple(b) for b in buckets] if buckets else None
        self.small_images = small_images
        self.flip = flip
        self.val_size = val_size
        self.val_batch_size = val_batch_size or batch_size
        self.file_list = file_list
        self.split = split
        self.image_column = image_column
        self.shuffle_buffer = shuffle_buffer
        self.train_urls: list[str] = []
        self.val_urls: list[str] = []
        self.stream_positions: dict[int, tuple[int, int]] = {}
        self.stream_readers: int | None = None
        self.background = tuple(background)
        self.max_image_pixels = max_image_pixels
        self.num_workers = default_num_workers() if num_workers is None else num_workers
        self.prefetch_factor = prefetch_factor
        self.seed = seed
        self.start_batch = 0
        self.start_sample: int | None = None
        self.tracker = BadFileTracker(max_bad_fraction, bad_fraction_min_samples)
        self.train_records: RecordSource | None = None
        self.all_records: RecordSource | None = None
        self.val_records: RecordSource | None = None
        self._batches_seen = 0
        self._readers_at_save: int | None = None

    @property
    def root(self) -> Path:
        return Path(self.path).expanduser() if self.path else sample_images_dir()

    def resolved_source(self) -> str:
        """`auto`: a folder holding a saved `datasets` dataset or parquet/arrow files, or a Hub-style id
        that is not a local path, is `hf`; any other folder is `folder`."""
        if self.source != "auto":
            return self.source
        if self.path is None:
            return "folder"
        if ".tar" in str(self.path) and not self.root.is_dir():
            return "webdataset"
        root = self.root
        if root.is_dir():
            markers = ("dataset_dict.json", "state.json", "dataset_info.json")
            if any((root / m).exists() for m in markers) or any(root.glob("*.parquet")) or any(root.glob("*.arrow")):
                return "hf"
            return "folder"
        if not root.exists() and "/" in str(self.path) and not str(self.path).startswith((".", "/", "~")):
            return "hf"
        return "folder"

    @property
    def train_files(self) -> list[Path]:
        self.prepare_split()
        return list(getattr(self.train_records, "files", []))

    @property
    def val_files(self) -> list[Path]:
        self.prepare_split()
        return list(getattr(self.val_records, "files", []))

    def check_resolution(self, factor: int) -> None:
        """Fails early when the autoencoder cannot reconstruct at this size."""
        for height, width in self.buckets or []:
            if height % factor or width % factor:
                raise ConfigError(f"data.buckets: [{height}, {width}] is not divisible by the downsampling factor {factor}")
        if self.resolution % factor:
            raise ConfigError(
                f"data.resolution={self.resolution} is not divisible by the autoencoder's downsampling factor "
                f"{factor}; use a multiple of {factor} (e.g. {max(factor, self.resolution // factor * factor)})"
            )

    @property
    def is_stream(self) -> bool:
        return self.resolved_source() == "webdataset"

    def prepare_split(self) -> None:
        if self.train_records is not None or self.train_urls:
            return
        if self.is_stream:
            urls = expand_shards(str(self.path))
            if len(urls) == 1:
                self.train_urls = self.val_urls = urls  # one shard: validation overlaps training
            else:
                count = int(self.val_size) if self.val_size >= 1 else round(len(urls) * self.val_size)
                count = max(1, min(count, len(urls) - 1))
                self.train_urls, self.val_urls = urls[:-count], urls[-count:]
            return
        if self.resolved_source() == "hf":
            records = load_hf_records(str(self.path), self.split, self.image_column)
        else:
            records = FileRecords(folder_files(self.root, self.file_list))
        train, val = split_train_val(list(range(len(records))), self.val_size)
        self.all_records = records
        self.train_records, self.val_records = records.subset(train), records.subset(val)

    def setup(self, stage: str | None = None) -> None:
        self.prepare_split()

    def set_start_batch(self, batch: int) -> None:
        """The next training micro-batch of this process."""
        self.start_batch = batch
        self.start_sample = None

    def set_start_sample(self, samples_seen: int) -> None:
        """Resume after `samples_seen` images of all processes together (restored from a checkpoint).
        The micro-batch is worked out when the loader is built, so the number of processes may differ
        from the run that saved the checkpoint."""
        self.start_sample = samples_seen

    def _resolve_start_batch(self, world_size: int) -> int:
        if self.start_sample is None:
            return self.start_batch
        batch, remainder = divmod(self.start_sample, world_size * self.batch_size)
        if remainder:  # only when the batch shape changed: continue at the next whole global batch
            batch += 1
            warnings.warn(
                f"resuming after {self.start_sample} samples with {world_size} x {self.batch_size} per batch: "
                f"skipping {world_size * self.batch_size - remainder} samples to the next whole batch",
                stacklevel=2,
            )
        return batch

    def decoder(self, *, train: bool, native: bool = False) -> SampleDecoder:
        """Decode + transform for training (augmenting, `crop` policy) or evaluation (resize + center, or
        the image as it is when `native`)."""
        if native:
            return SampleDecoder(native_transform(), DecodeOptions(background=self.background, max_pixels=self.max_image_pixels))
        options = DecodeOptions(
            min_short_side=self.resolution if decodes_at_reduced_size(train, self.crop) else None,
            skip_smaller_than=self.resolution if train and self.small_images == "skip" else None,
            background=self.background,
            max_pixels=self.max_image_pixels,
        )
        crop_policy = self.crop if train else "resize_crop"
        return SampleDecoder(image_transform(self.resolution, train=train, flip=self.flip, crop=crop_policy), options)

    def dataset(self, split: Literal["train", "val", "all"], *, train: bool, max_items: int | None = None, native: bool = False):
        """Decoded images of the train or val split, or of all images; `train` picks the augmenting
        transform, `native` keeps each image's own size. For shards, a finite in-order stream."""
        self.prepare_split()
        decoder = self.decoder(train=train, native=native)
        if self.is_stream:
            urls = {"train": self.train_urls, "val": self.val_urls, "all": expand_shards(str(self.path))}[split]
            return WebDatasetStream(urls, decoder, seed=self.seed, endless=False, max_samples=max_items)
        records = {"train": self.train_records, "val": self.val_records, "all": self.all_records}[split]
        if max_items is not None and len(records) > max_items:
            step = len(records) // max_items
            records = records.subset(list(range(0, len(records), step))[:max_items])
        return DecodedImages(records, decoder)

    def train_dataloader(self) -> DataLoader:
        rank, world_size = self._rank_and_world_size()
        self.prepare_split()
        if self.is_stream:
            self.stream_readers = world_size * max(1, self.num_workers)
            stream = WebDatasetStream(
                self.train_urls,
                self.decoder(train=True),
                seed=self.seed,
                rank=rank,
                world_size=world_size,
                shuffle_buffer=self.shuffle_buffer,
                start_positions=self.stream_positions,
                readers_at_save=self._readers_at_save,
            )
            return self._loader(stream, self.batch_size)
        plan, bucket_datasets = None, None
        if self.buckets:
            if self.is_stream:
                raise ConfigError("data.buckets: not supported for WebDataset shards (sizes are unknown up front)")
            plan = BucketPlan(assign_buckets(self.train_records, self.buckets), self.batch_size, self.seed)
            options = replace(self.decoder(train=True).options, min_short_side=None)
            bucket_datasets = [
                DecodedImages(self.train_records, SampleDecoder(bucket_transform(h, w, flip=self.flip), options))
                for h, w in self.buckets
            ]
        stream = ResumableImageStream(
            self.dataset("train", train=True),
            batch_size=self.batch_size,
            seed=self.seed,
            rank=rank,
            world_size=world_size,
            start_batch=self._resolve_start_batch(world_size),
            bucket_plan=plan,
            bucket_datasets=bucket_datasets,
        )
        return self._loader(stream, self.batch_size)

    def val_dataloader(self) -> DataLoader:
        rank, world_size = self._rank_and_world_size()
        if self.is_stream:
            self.prepare_split()
            stream = WebDatasetStream(self.val_urls, self.decoder(train=False), seed=self.seed, rank=rank, world_size=world_size, endless=False)
            return self._loader(stream, self.val_batch_size)
        dataset = self.dataset("val", train=False)
        sampler = DistributedSampler(dataset, world_size, rank, shuffle=False) if world_size > 1 else None
        return self._loader(dataset, self.val_batch_size, sampler=sampler)

    def evaluation_dataloader(
        self, max_images: int | None, *, split: Literal["train", "val", "all"] = "train", native: bool = False
    ) -> DataLoader:
        """Center crops (or, `native`, whole images one per batch) of up to `max_images` evenly spaced
        images, e.g. to measure latent statistics. Batches are dicts; `images_of` takes the tensor out."""
        dataset = self.dataset(split, train=False, max_items=max_images, native=native)
        return self._loader(dataset, 1 if native else self.val_batch_size)

    def fixed_images(self, count: int) -> torch.Tensor:
        """Center crops of the first `count` validation images (then training images if too few): the
        same inputs in every reconstruction grid."""
        images: list[torch.Tensor] = []
        for split in ("val", "train"):
            dataset = self.dataset(split, train=False, max_items=None if not self.is_stream else count)
            samples = iter(dataset) if self.is_stream else (dataset[i] for i in range(len(dataset)))
            for sample in samples:
                if len(images) == count:
                    break
                images.append(sample["image"])
        return torch.stack(images)

    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Counts what the loaders skipped (raising past the threshold) and hands the module a tensor."""
        if not isinstance(batch, dict):
            return batch
        trainer = self._trainer_or_none()
        if trainer is not None and not trainer.training:
            return batch["image"]  # validation images are the same every time: counted once, at setup
        self.tracker.update(len(batch["image"]) + len(batch["bad"]), batch["bad"], batch["small"])
        self._batches_seen += 1
        for reader, position in batch.get("positions", {}).items():
            self.stream_positions[reader] = max(self.stream_positions.get(reader, (0, 0)), tuple(position))
        if trainer is not None and (batch["bad"] or batch["small"] or self._batches_seen % 50 == 0):
            for logger in trainer.loggers:
                logger.log_metrics(self.tracker.metrics(), step=trainer.global_step)
        return batch["image"]

    def state_dict(self) -> dict[str, Any]:
        tracker = self.tracker
        return {
            "bad": tracker.bad,
            "seen": tracker.seen,
            "skipped_small": tracker.skipped_small,
            "stream_positions": {int(k): list(v) for k, v in self.stream_positions.items()},
            "stream_readers": self.stream_readers,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.tracker.bad = int(state_dict.get("bad", 0))
        self.tracker.seen = int(state_dict.get("seen", 0))
        self.tracker.skipped_small = int(state_dict.get("skipped_small", 0))
        self.stream_positions = {int(k): tuple(v) for k, v in state_dict.get("stream_positions", {}).items()}
        self._readers_at_save = state_dict.get("stream_readers")

    def _trainer_or_none(self):
        try:
            return self.trainer
        except RuntimeError:
            return None

    def _rank_and_world_size(self) -> tuple[int, int]:
        trainer = self._trainer_or_none()
        return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)

    def _loader(self, dataset, batch_size: int, sampler=None) -> DataLoader:
        workers = self.num_workers
        return DataLoader(
            dataset,
            batch_size=batch_size,
            sampler=sampler,
            num_workers=workers,
            pin_memory=torch.cuda.is_available(),
            persistent_workers=workers > 0,
            prefetch_factor=self.prefetch_factor if workers > 0 else None,
            collate_fn=collate_samples,
            drop_last=False,
        )


def images_of(batch: Any) -> torch.Tensor:
    """The image tensor of a loader batch (dict from `collate_samples`, or a plain tensor)."""
    return batch["image"] if isinstance(batch, dict) else batch


def default_num_workers() -> int:
    """One worker per spare core, at most 8: decoding keeps pace without starving the training process."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(0, min(8, cores - 1))
