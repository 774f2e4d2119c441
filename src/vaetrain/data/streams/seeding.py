"""The one seeding rule of the data streams: every draw (an epoch's order, a sample's crop and flip, a
shard reader's shuffle) is seeded by the run's `data.seed` and the draw's position alone, so a resumed run,
any number of workers and any number of processes draw exactly what an uninterrupted run would."""

from __future__ import annotations

SEED_STRIDE = 1_000_003  # a prime: runs with neighbouring seeds do not share draws for the first million offsets


def derived_seed(seed: int, offset: int) -> int:
    """The seed of draw `offset` (an epoch number, a sample position) of a run seeded with `seed`."""
    return (seed * SEED_STRIDE + offset) % 2**63
