"""Progressive resolution (`data.resolution_schedule`): training crops change size at given generator steps.

Phase k starts at generator step S_k and crops at resolution r_k with micro-batch b_k (a memory budget may
give each phase its own). The global batch G (images per generator step, all processes) stays the same,
so phase k starts at global sample S_k x G whatever the micro-batches, and a sample's content depends on
its global position alone (`ResumableImageStream.sample_at_global`): a run resumed anywhere, before or
after a change, reads exactly what an uninterrupted run read, with any number of loader workers.
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace

from torch.utils.data import IterableDataset, get_worker_info

from vaetrain.data.decoding.samples import SampleDecoder
from vaetrain.data.sources.spec import SampleSource, StreamLayout
from vaetrain.data.streams.resumable import ResumableImageStream
from vaetrain.errors import ConfigError


@dataclass(frozen=True)
class Phase:
    """From generator step `start_step` on: crops of `resolution` in micro-batches of `micro_batch`."""

    start_step: int
    resolution: int
    micro_batch: int

    def as_dict(self) -> dict:
        return asdict(self)


def schedule_phases(resolution: int, schedule: list[tuple[int, int]] | None, micro_batches: list[int] | None = None, batch_size: int = 1) -> list[Phase]:
    """Phase 0 at `resolution` from step 0, then one phase per [step, resolution] entry (steps increasing)."""
    entries = [(0, resolution)] + [tuple(entry) for entry in schedule or []]
    for (step_before, _), (step, side) in zip(entries, entries[1:]):
        if step <= step_before:
            raise ConfigError(f"data.resolution_schedule: steps must increase from 1, got {step} after {step_before}")
        if side <= 0:
            raise ConfigError(f"data.resolution_schedule: resolution must be positive, got {side} at step {step}")
    micro_batches = micro_batches or [batch_size] * len(entries)
    if len(micro_batches) != len(entries):
        raise ConfigError(f"data.resolution_schedule: {len(micro_batches)} micro-batches for {len(entries)} phases")
    return [Phase(int(step), int(side), int(batch)) for (step, side), batch in zip(entries, micro_batches)]


def phase_at_step(starts: list[int], step: int) -> int:
    """The index of the phase (by its start steps) that generator step `step` trains in."""
    return max(k for k, start in enumerate(starts) if start <= step)


def phased_stream(source: SampleSource, decoder_at: Callable[[int], SampleDecoder], phases: list[Phase], layout: StreamLayout, accumulate: int) -> PhasedStream:
    """This process's training stream over all phases: one record stream per phase (its crop size from
    `decoder_at(resolution)`, its micro-batch), read in global sample positions from `layout.start_sample`;
    G = phase 0's micro-batch x `accumulate` x processes."""
    samples_per_step = phases[0].micro_batch * accumulate * layout.world_size
    streams = [source.train_samples(decoder_at(p.resolution), replace(layout, batch_size=p.micro_batch, start_sample=0)) for p in phases]
    return PhasedStream(streams, phases, samples_per_step, rank=layout.rank, world_size=layout.world_size, start_sample=layout.start_sample)


class PhasedStream(IterableDataset):
    """Whole micro-batches (lists of samples; the DataLoader runs with batch_size=None) of this rank, phase
    after phase, forever, starting after `start_sample` images of all processes together.

    `streams[k]` reads phase k (its decoder crops at r_k); `samples_per_step` is G. Worker w of W builds
    batches w, w + W, ... of the sequence, which the DataLoader returns in order."""

    def __init__(
        self, streams: list[ResumableImageStream], phases: list[Phase], samples_per_step: int, *, rank: int = 0, world_size: int = 1, start_sample: int = 0
    ) -> None:
        super().__init__()
        for phase in phases:
            if samples_per_step % (world_size * phase.micro_batch):
                raise ConfigError(
                    f"data.resolution_schedule: {samples_per_step} images per step is not a multiple of "
                    f"{world_size} processes x micro-batch {phase.micro_batch} (phase from step {phase.start_step})"
                )
        self.streams, self.phases, self.samples_per_step = streams, phases, samples_per_step
        self.rank, self.world_size, self.start_sample = rank, world_size, start_sample

    def __iter__(self) -> Iterator[list[dict]]:
        worker = get_worker_info()
        worker_id, num_workers = (worker.id, worker.num_workers) if worker else (0, 1)
        for number, (k, j) in enumerate(self._sequence()):
            if number % num_workers == worker_id:
                yield self.batch(k, j)

    def batch(self, k: int, j: int) -> list[dict]:
        """Micro-batch j of phase k of this rank."""
        phase, base = self.phases[k], self.phases[k].start_step * self.samples_per_step
        first = j * phase.micro_batch
        return [self.streams[k].sample_at_global(base + (first + i) * self.world_size + self.rank) for i in range(phase.micro_batch)]

    def _per_rank_batches(self, k: int) -> float:
        if k + 1 == len(self.phases):
            return math.inf
        steps = self.phases[k + 1].start_step - self.phases[k].start_step
        return steps * self.samples_per_step // (self.world_size * self.phases[k].micro_batch)

    def _sequence(self) -> Iterator[tuple[int, int]]:
        k, first = self._locate(self.start_sample)
        while True:
            count = self._per_rank_batches(k)
            for j in itertools.count(first) if math.isinf(count) else range(first, int(count)):
                yield k, j
            k, first = k + 1, 0

    def _locate(self, sample: int) -> tuple[int, int]:
        k = max(i for i, phase in enumerate(self.phases) if phase.start_step * self.samples_per_step <= sample)
        per_batch = self.world_size * self.phases[k].micro_batch
        j, remainder = divmod(sample - self.phases[k].start_step * self.samples_per_step, per_batch)
        if remainder:  # only when the batch shape changed: continue at the next whole global batch
            warnings.warn(f"resuming after {sample} samples with {per_batch} per batch: skipping {per_batch - remainder} samples", stacklevel=2)
            j += 1
        return k, j


def check_sides(phases: list[Phase], buckets: list[tuple[int, int]] | None, factor: int) -> None:
    """Every training side (each phase's crop, each bucket) is divisible by the autoencoder's downsampling
    factor, or a one-line error names the setting."""
    for height, width in buckets or []:
        if height % factor or width % factor:
            raise ConfigError(f"data.buckets: [{height}, {width}] is not divisible by the downsampling factor {factor}")
    for phase in phases:
        if phase.resolution % factor:
            key = "data.resolution" if phase.start_step == 0 else f"data.resolution_schedule (step {phase.start_step})"
            raise ConfigError(
                f"{key}={phase.resolution} is not divisible by the autoencoder's downsampling factor "
                f"{factor}; use a multiple of {factor} (e.g. {max(factor, phase.resolution // factor * factor)})"
            )
