"""An endless, resumable, rank-sharded stream of training samples: training runs by steps, not epochs."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import torch
from torch.utils.data import Dataset, IterableDataset, get_worker_info

from vaetrain.data.streams.seeding import derived_seed


class ResumableImageStream(IterableDataset):
    """Yields the samples of micro-batches start_batch, start_batch + 1, ... of this rank, forever.

    Sample position p of rank r is global position g = p * world_size + r. Epoch e = g // len(dataset)
    is a permutation drawn from (seed, e), and the random crop/flip of position g is seeded by (seed, g).
    With a `bucket_plan`, batch n of all ranks together is `bucket_plan.batch(n)`, cropped by that
    bucket's dataset. So what a micro-batch holds depends on its number alone: a run resumed at batch k sees exactly what
    an uninterrupted run saw from batch k on, with any number of loader workers (worker w of W builds
    batches w, w + W, ..., which the DataLoader returns in order). Ranks read disjoint positions.
    """

    def __init__(
        self,
        dataset: Dataset,
        *,
        batch_size: int,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        start_batch: int = 0,
        bucket_plan=None,
        bucket_datasets: list[Dataset] | None = None,
    ) -> None:
        super().__init__()
        self.dataset = dataset
        self.batch_size = batch_size
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.start_batch = start_batch
        self.bucket_plan = bucket_plan
        self.bucket_datasets = bucket_datasets
        self._epoch = -1
        self._order = torch.empty(0, dtype=torch.long)

    def __iter__(self) -> Iterator[dict]:
        worker = get_worker_info()
        worker_id, num_workers = (worker.id, worker.num_workers) if worker else (0, 1)
        for batch in itertools.count(self.start_batch + worker_id, num_workers):
            if self.bucket_plan is not None:
                yield from self._bucket_batch(batch)
                continue
            for position in range(batch * self.batch_size, (batch + 1) * self.batch_size):
                yield self.sample_at(position)

    def _bucket_batch(self, batch: int) -> Iterator[dict]:
        """With aspect-ratio buckets, a batch is planned whole: one bucket, one crop shape."""
        number = batch * self.world_size + self.rank
        bucket, indices = self.bucket_plan.batch(number)
        for j, index in enumerate(indices):
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(derived_seed(self.seed, number * self.batch_size + j))
                yield self.bucket_datasets[bucket][index]

    def global_position(self, position: int) -> int:
        return position * self.world_size + self.rank

    def index_at(self, position: int) -> int:
        """The dataset index at this rank's stream position."""
        return self.index_at_global(self.global_position(position))

    def index_at_global(self, position: int) -> int:
        """The dataset index at a position of the stream of all ranks together."""
        epoch, offset = divmod(position, len(self.dataset))  # type: ignore[arg-type]
        if epoch != self._epoch:
            generator = torch.Generator().manual_seed(derived_seed(self.seed, epoch))
            self._order = torch.randperm(len(self.dataset), generator=generator)  # type: ignore[arg-type]
            self._epoch = epoch
        return int(self._order[offset])

    def sample_at(self, position: int) -> dict:
        return self.sample_at_global(self.global_position(position))

    def sample_at_global(self, position: int) -> dict:
        """The sample at a global position: its record by the epoch's permutation, its crop and flip seeded by
        the position (so it is the same whichever rank, worker or batch layout reads it)."""
        index = self.index_at_global(position)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(derived_seed(self.seed, position))
            return self.dataset[index]
