"""Shard-backed source: WebDataset tar shards, read in order; the last `val_size` shards validate.

Resume is at shard granularity: each batch carries, per reader, the shard it came from; the latest is
kept (`observe`) and saved, and a resumed stream re-reads that shard from its start (see
`WebDatasetStream`).
"""

from __future__ import annotations

from typing import Any

from torch.utils.data import IterableDataset

from vaetrain.data.decoding.samples import SampleDecoder
from vaetrain.data.quality import scan_usable
from vaetrain.data.sources.spec import Bucket, Part, SourceSpec, StreamLayout
from vaetrain.data.streams.webdataset import WebDatasetStream, expand_shards
from vaetrain.errors import ConfigError


class ShardImages:
    """WebDataset shards behind the `SampleSource` interface."""

    supports_buckets = False  # image sizes are unknown until a shard is read

    def __init__(self, spec: SourceSpec) -> None:
        self.spec = spec
        self._parts: dict[str, list[str]] | None = None
        self.positions: dict[int, tuple[int, int]] = {}
        self.readers: int | None = None
        self._readers_at_save: int | None = None

    def prepare(self) -> None:
        if self._parts is not None:
            return
        urls = expand_shards(str(self.spec.path))
        if self.spec.val_size == 0:  # another source validates
            train, val = urls, []
        elif len(urls) == 1:
            train, val = urls, urls  # one shard: validation overlaps training
        else:
            val_size = self.spec.val_size
            count = int(val_size) if val_size >= 1 else round(len(urls) * val_size)
            count = max(1, min(count, len(urls) - 1))
            train, val = urls[:-count], urls[-count:]
        self._parts = {"all": urls, "train": train, "val": val}

    def urls(self, part: Part) -> list[str]:
        self.prepare()
        return list(self._parts[part])

    def images(self, part: Part, decoder: SampleDecoder, *, rank: int = 0, world_size: int = 1, max_items: int | None = None) -> IterableDataset:
        return WebDatasetStream(self.urls(part), decoder, seed=0, rank=rank, world_size=world_size, endless=False, max_samples=max_items)

    def keep_usable(self, part: Part, decoder: SampleDecoder) -> tuple[int, list[tuple[str, str]]]:
        usable, bad = scan_usable(self.images(part, decoder))
        return len(usable), bad

    def train_samples(self, decoder: SampleDecoder, layout: StreamLayout, buckets: list[Bucket] | None = None) -> IterableDataset:
        if buckets:
            raise ConfigError("data.buckets: not supported for WebDataset shards (image sizes are unknown before reading)")
        self.readers = layout.world_size * max(1, layout.readers)
        return WebDatasetStream(
            self.urls("train"),
            decoder,
            seed=layout.seed,
            rank=layout.rank,
            world_size=layout.world_size,
            shuffle_buffer=layout.shuffle_buffer,
            start_positions=self.positions,
            readers_at_save=self._readers_at_save,
        )

    def observe(self, batch: dict) -> None:
        for reader, position in batch.get("positions", {}).items():
            self.positions[reader] = max(self.positions.get(reader, (0, 0)), tuple(position))

    def state_dict(self) -> dict[str, Any]:
        return {"stream_positions": {int(k): list(v) for k, v in self.positions.items()}, "stream_readers": self.readers}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.positions = {int(k): tuple(v) for k, v in state.get("stream_positions", {}).items()}
        self._readers_at_save = state.get("stream_readers")
