"""WebDataset tar shards, local or remote, streamed with the `webdataset` package.

Each epoch draws a permutation of the shards from (seed, epoch); reader g of G (G = processes x loader
workers) takes shards g, g + G, ... of it, so processes and workers read disjoint shards. Samples pass a
shuffle buffer seeded by (seed, epoch, g). Resume is at shard granularity: the data module records,
per reader, the shard being read when each batch was made, and a resumed run re-reads that shard from
its start with an empty buffer; samples of that shard may repeat and those still in the buffer are
dropped. Resuming with a different number of readers restarts the recorded epoch.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator

import torch
from torch.utils.data import IterableDataset, get_worker_info

from vaetrain.data.streams.decoded import merge_reports
from vaetrain.data.streams.seeding import derived_seed
from vaetrain.errors import ConfigError


def expand_shards(pattern: str) -> list[str]:
    """`shards/{00000..00099}.tar` (and `a::b` lists) to shard URLs, by webdataset's own rules."""
    from webdataset.shardlists import expand_urls

    urls = list(expand_urls(pattern))
    if not urls:
        raise ConfigError(f"data.path: shard pattern '{pattern}' expands to no shards")
    local_missing = [u for u in urls if "://" not in u and not u.startswith("pipe:") and not _exists(u)]
    if local_missing:
        raise ConfigError(f"data.path: {len(local_missing)} shards do not exist, e.g. '{local_missing[0]}'")
    return urls


def _exists(path: str) -> bool:
    from pathlib import Path

    return Path(path).expanduser().is_file()


class WebDatasetStream(IterableDataset):
    """Endless samples {"pixels", "bad", "small", "reader", "position"} from tar shards (see module doc)."""

    def __init__(
        self,
        urls: list[str],
        decode: Callable[[bytes, str], dict],
        *,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        shuffle_buffer: int = 1000,
        endless: bool = True,
        start_positions: dict[int, tuple[int, int]] | None = None,
        readers_at_save: int | None = None,
        max_samples: int | None = None,
    ) -> None:
        super().__init__()
        self.urls = urls
        self.decode = decode
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.shuffle_buffer = shuffle_buffer
        self.endless = endless
        self.start_positions = start_positions or {}
        self.readers_at_save = readers_at_save
        self.max_samples = max_samples

    def __iter__(self) -> Iterator[dict]:
        samples = self._iterate()
        if self.max_samples is None:
            return samples
        return (sample for _, sample in zip(range(self.max_samples), samples))

    def _iterate(self) -> Iterator[dict]:
        worker = get_worker_info()
        worker_id, num_workers = (worker.id, worker.num_workers) if worker else (0, 1)
        readers = self.world_size * num_workers
        reader = self.rank * num_workers + worker_id
        epoch, ordinal = self._start(reader, readers)
        while True:
            order = torch.randperm(len(self.urls), generator=torch.Generator().manual_seed(derived_seed(self.seed, epoch)))
            mine = [self.urls[i] for i in order.tolist()[reader::readers]] if self.endless else self.urls[reader::readers]
            rng = random.Random(derived_seed(7 * self.seed, epoch * 8191 + reader))
            buffer: list[dict] = []
            pending = {"bad": [], "small": 0}
            for k in range(ordinal, len(mine)):
                for sample in self._samples(mine[k]):
                    if sample["pixels"] is None:
                        pending = merge_reports(pending, sample)
                        continue
                    sample = merge_reports(pending, sample) | {"reader": reader, "position": (epoch, k)}
                    pending = {"bad": [], "small": 0}
                    if self.shuffle_buffer <= 1 or not self.endless:
                        yield sample
                        continue
                    buffer.append(sample)
                    if len(buffer) >= self.shuffle_buffer:
                        yield buffer.pop(rng.randrange(len(buffer)))
            rng.shuffle(buffer)
            yield from buffer
            if not self.endless:
                if pending["bad"] or pending["small"]:  # bad files after the last usable one are counted too
                    yield {"pixels": None, **pending}
                return
            epoch, ordinal = epoch + 1, 0

    def _start(self, reader: int, readers: int) -> tuple[int, int]:
        if not self.start_positions:
            return 0, 0
        if self.readers_at_save == readers and reader in self.start_positions:
            return tuple(self.start_positions[reader])  # type: ignore[return-value]
        return min(epoch for epoch, _ in self.start_positions.values()), 0

    def _samples(self, url: str) -> Iterator[dict]:
        """Decoded samples of one shard; unreadable members and shards are reported, not raised."""
        from webdataset.tariterators import tarfile_samples

        errors: list[Exception] = []

        def keep_going(error: Exception) -> bool:
            errors.append(error)
            return True

        for sample in tarfile_samples([{"url": url}], handler=keep_going):
            key = f"{url}:{sample.get('__key__', '?')}"
            data = next((sample[k] for k in self.decode.types if k in sample), None)
            if data is None:
                yield {"pixels": None, "bad": [(key, f"none of {'/'.join(self.decode.types)} in the sample")], "small": 0}
                continue
            yield self.decode(data, key) | {"name": key}
        for error in errors:
            yield {"pixels": None, "bad": [(url, f"unreadable shard data ({error})")], "small": 0}
