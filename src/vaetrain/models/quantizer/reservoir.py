"""The encoder outputs a codebook draws its k-means start and its restarts from: a seeded sample of one
accumulated batch that is the same however the batch is split into micro-batches and processes.

Each row gets a key computed from the seed, its image's number in the accumulated batch of all processes and
its place in that image; the reservoir keeps the `size` rows of smallest key. That is reservoir sampling by
random tags (bottom-k sampling): a uniform sample without replacement of min(size, rows) rows, where a row's
chance does not depend on when it arrived, and which merges exactly: micro-batch by micro-batch (`add`), then
over processes (`samples`), it ends with the rows, in key order, that one process given the whole batch keeps.

Image numbers follow the training stream (`data.streams.resumable`: position p of rank r of R processes is
global position p * R + r): image i of a process's micro-batch, after `before` images of the window on that
process, is image (before + i) * R + r of the window, the same image whatever R and the accumulation are.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

_WORD = 0xFFFFFFFF
_NO_KEY = torch.iinfo(torch.int64).max


def _mix(x: torch.Tensor) -> torch.Tensor:
    """A 32-bit integer hash of int64 `x` in [0, 2^32): xor-shift-multiply rounds, a bijection; the multipliers
    are below 2^31, so no product leaves int64."""
    x = x ^ (x >> 16)
    x = (x * 0x7FEB352D) & _WORD
    x = x ^ (x >> 15)
    x = (x * 0x2C1B3C6D) & _WORD
    return x ^ (x >> 16)


def row_keys(images: torch.Tensor, rows_per_image: int, seed: int) -> torch.Tensor:
    """(len(images) * rows_per_image,) distinct-in-practice int64 keys in [0, 2^62) for the rows of the images
    numbered `images` (int64), each image's rows in order: two 31-bit hashes of (seed, image, row)."""
    rows = torch.arange(rows_per_image, device=images.device)
    halves = []
    for salt in (2 * seed, 2 * seed + 1):
        salted = _mix(torch.tensor(salt & _WORD, device=images.device))
        image = _mix((images & _WORD) ^ salted)
        halves.append(_mix((image[:, None] + rows) & _WORD) >> 1)
    return ((halves[0] << 31) | halves[1]).reshape(-1)


@dataclass
class Reservoir:
    """One window's sample on one process (rank `rank` of `processes`): the `size` rows of smallest key so far,
    in key order."""

    size: int
    seed: int
    rank: int = 0
    processes: int = 1
    images: int = 0
    keys: torch.Tensor | None = None
    rows: torch.Tensor | None = None

    def add(self, rows: torch.Tensor, images: int) -> None:
        """A micro-batch of `images` images' rows (N, d), each image's rows in raster order."""
        if len(rows) % images:
            raise ValueError(f"{len(rows)} rows are not {images} images of equal size")
        numbers = (self.images + torch.arange(images, device=rows.device)) * self.processes + self.rank
        keys = row_keys(numbers, len(rows) // images, self.seed)
        if self.keys is not None:
            keys, rows = torch.cat([self.keys, keys]), torch.cat([self.rows, rows])
        order = torch.argsort(keys, stable=True)[: self.size]
        self.keys, self.rows, self.images = keys[order], rows[order], self.images + images

    def samples(self, gather: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
        """The window's sample, in key order: this process's, or with `gather` (every process's tensor stacked,
        (processes, ...), a collective) the `size` rows of smallest key of all processes, on every process."""
        if gather is None:
            return self.rows
        padded = torch.full((self.size,), _NO_KEY, dtype=torch.int64, device=self.keys.device)
        padded[: len(self.keys)] = self.keys
        every = gather(padded).reshape(-1)
        order = torch.argsort(every, stable=True)[: self.size]
        order = order[every[order] != _NO_KEY]
        owner, place = order // self.size, order % self.size  # each process's share is the start of its reservoir
        share = self.rows.new_zeros(int(torch.bincount(owner).max()), self.rows.shape[1])
        taken = int((self.keys <= every[order[-1]]).sum())
        share[:taken] = self.rows[:taken]
        return gather(share)[owner, place]
