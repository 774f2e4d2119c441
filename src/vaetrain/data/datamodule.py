"""The LightningDataModule: one config block (`data.*`) for where images come from and how they are cut."""

from __future__ import annotations

import os
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader, DistributedSampler

from vaetrain.data.folder import ImageFileDataset, list_images, sample_images_dir, split_train_val
from vaetrain.data.stream import ResumableImageStream
from vaetrain.data.transforms import image_transform
from vaetrain.errors import ConfigError


class ImageDataModule(L.LightningDataModule):
    """Images from a folder (recursive), or the bundled samples when `path` is None.

    `batch_size` is the micro-batch per process; the training stream is endless and resumable (see
    `ResumableImageStream`), so runs are measured in steps. `set_start_batch` positions it on resume.
    """

    def __init__(
        self,
        path: str | None = None,
        resolution: int = 256,
        batch_size: int = 4,
        val_size: int | float = 0.05,
        val_batch_size: int | None = None,
        num_workers: int | None = None,
        flip: bool = True,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if resolution <= 0:
            raise ConfigError(f"data.resolution must be positive, got {resolution}")
        if batch_size <= 0:
            raise ConfigError(f"data.batch_size must be positive, got {batch_size}")
        self.path = path
        self.resolution = resolution
        self.batch_size = batch_size
        self.val_size = val_size
        self.val_batch_size = val_batch_size or batch_size
        self.num_workers = default_num_workers() if num_workers is None else num_workers
        self.flip = flip
        self.seed = seed
        self.start_batch = 0
        self.train_files: list[Path] = []
        self.val_files: list[Path] = []

    @property
    def root(self) -> Path:
        return Path(self.path).expanduser() if self.path else sample_images_dir()

    def check_resolution(self, factor: int) -> None:
        """Fails early when the autoencoder cannot reconstruct at this size."""
        if self.resolution % factor:
            raise ConfigError(
                f"data.resolution={self.resolution} is not divisible by the autoencoder's downsampling factor "
                f"{factor}; use a multiple of {factor} (e.g. {max(factor, self.resolution // factor * factor)})"
            )

    def prepare_split(self) -> None:
        if not self.train_files:
            self.train_files, self.val_files = split_train_val(list_images(self.root), self.val_size)

    def setup(self, stage: str | None = None) -> None:
        self.prepare_split()

    def set_start_batch(self, batch: int) -> None:
        """The next training micro-batch of this process (restored from a checkpoint)."""
        self.start_batch = batch

    def train_dataloader(self) -> DataLoader:
        self.prepare_split()
        rank, world_size = self._rank_and_world_size()
        stream = ResumableImageStream(
            ImageFileDataset(self.train_files, image_transform(self.resolution, train=True, flip=self.flip)),
            batch_size=self.batch_size,
            seed=self.seed,
            rank=rank,
            world_size=world_size,
            start_batch=self.start_batch,
        )
        return self._loader(stream, self.batch_size)

    def val_dataloader(self) -> DataLoader:
        self.prepare_split()
        dataset = ImageFileDataset(self.val_files, image_transform(self.resolution, train=False))
        rank, world_size = self._rank_and_world_size()
        sampler = DistributedSampler(dataset, world_size, rank, shuffle=False) if world_size > 1 else None
        return self._loader(dataset, self.val_batch_size, sampler=sampler)

    def evaluation_dataloader(self, max_images: int, *, split: str = "train") -> DataLoader:
        """Center crops of up to `max_images` evenly spaced files, e.g. to measure latent statistics."""
        self.prepare_split()
        files = self.train_files if split == "train" else self.val_files
        step = max(1, len(files) // max_images)
        dataset = ImageFileDataset(files[::step][:max_images], image_transform(self.resolution, train=False))
        return self._loader(dataset, self.val_batch_size)

    def fixed_images(self, count: int) -> torch.Tensor:
        """Center crops of the first `count` validation images (then training images if too few): the
        same inputs in every reconstruction grid."""
        self.prepare_split()
        files = (self.val_files + [f for f in self.train_files if f not in self.val_files])[:count]
        dataset = ImageFileDataset(files, image_transform(self.resolution, train=False))
        return torch.stack([dataset[i] for i in range(len(dataset))])

    def _rank_and_world_size(self) -> tuple[int, int]:
        trainer = self.trainer
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
            drop_last=False,
        )


def default_num_workers() -> int:
    """One worker per spare core, at most 8: decoding keeps pace without starving the training process."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(0, min(8, cores - 1))
