"""Clips of mixed lengths (`data.frames: [5, 9, 17]`): each micro-batch's clip length is drawn from the list.

A causal video VAE reads the first frame, then chunks of 4 frames through caches the previous chunks left;
a model trained on one short length never sees the caches later chunks leave. Training on a set of lengths
covers them while most batches stay short. The length of micro-batch n (of all processes together: every
process draws the same) is a uniform draw seeded by the run's `data.seed` and n alone (`streams.seeding`'s
rule; its own seed string, so it is independent of the crops and the order), so a run resumed at any batch,
with any number of loader workers, reads exactly what an uninterrupted run read. Batch n holds the samples
at the positions an unmixed run would read there, each decoded at the drawn length.

The micro-batch is not scaled to keep frames per batch constant: the stream's positions, the resume point
(`samples seen / (processes x micro-batch)`), the memory budget's plan and the step's sample counters all
take one micro-batch per run; a length-dependent batch would change each of them.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator, Sequence

from torch.utils.data import IterableDataset, get_worker_info

from vaetrain.data.sources.spec import StreamLayout
from vaetrain.data.streams.resumable import ResumableImageStream
from vaetrain.errors import ConfigError


def clip_lengths(frames: int | Sequence[int] | None) -> tuple[int, ...]:
    """`data.frames` (a count or a list of counts) as sorted distinct lengths; () for images (0 or None)."""
    if not frames:
        if isinstance(frames, (list, tuple)):
            raise ConfigError("data.frames: an empty list; give one frame count or several (e.g. [5, 9, 17])")
        return ()
    values = [frames] if isinstance(frames, int) else list(frames)
    if any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in values):
        raise ConfigError(f"data.frames: {frames} must be a positive frame count or a list of them")
    return tuple(sorted(set(values)))


def check_clip_lengths(lengths: tuple[int, ...], source_kind: str) -> None:
    if len(lengths) > 1 and source_kind == "webdataset":
        raise ConfigError("data.frames as a list reads folders or datasets by position; WebDataset shards are read in order")


def clip_length(lengths: Sequence[int], seed: int, number: int) -> int:
    """The clip length of micro-batch `number` (of all processes together) of a run seeded with `seed`."""
    return lengths[random.Random(f"vaetrain clip length {seed} {number}").randrange(len(lengths))]


class ClipLengthStream(IterableDataset):
    """Whole micro-batches (lists of samples; the DataLoader runs with batch_size=None) of this rank, each
    read from the stream of its drawn length (`ResumableImageStream`s of one source, by global position).
    Also a clip stream `MixedStream` reads by position (joint image + video training)."""

    def __init__(self, streams: dict[int, ResumableImageStream], layout: StreamLayout) -> None:
        super().__init__()
        self.streams, self.lengths, self.seed = streams, tuple(sorted(streams)), layout.seed
        self.micro_batch, self.rank, self.world_size = layout.batch_size, layout.rank, layout.world_size
        self.start_batch = next(iter(streams.values())).start_batch

    def length_of(self, number: int) -> int:
        return clip_length(self.lengths, self.seed, number)

    def sample_at_global(self, position: int) -> dict:
        """The sample at a position of all processes' stream, decoded at its batch's length."""
        return self.streams[self.length_of(position // (self.world_size * self.micro_batch))].sample_at_global(position)

    def batch(self, number: int) -> list[dict]:
        """Micro-batch `number` of this rank."""
        base = number * self.world_size * self.micro_batch
        return [self.sample_at_global(base + i * self.world_size + self.rank) for i in range(self.micro_batch)]

    def __iter__(self) -> Iterator[list[dict]]:
        worker = get_worker_info()
        worker_id, num_workers = (worker.id, worker.num_workers) if worker else (0, 1)
        for number in itertools.count(self.start_batch + worker_id, num_workers):
            yield self.batch(number)
