"""Decoded, transformed samples from any record source, with bad files replaced (training) or left out
(evaluation) and reported; and how a loader batches them."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch.utils.data import Dataset, IterableDataset

from vaetrain.data.decoding.samples import SampleDecoder
from vaetrain.errors import ConfigError

if TYPE_CHECKING:
    from vaetrain.data.sources.records import RecordSource


def merge_reports(unusable: dict, into: dict) -> dict:
    """Moves an unusable sample's reports onto the next usable sample."""
    into["bad"] = unusable["bad"] + into["bad"]
    into["small"] = unusable["small"] + into["small"]
    return into


class DecodedImages(Dataset):
    """`dataset[i]` is {"pixels": tensor, "bad": [(name, reason)], "small": n}.

    Training (`replace_bad`): a record that cannot be used is replaced by the next one (i + 1, i + 2, ...):
    the replacement is deterministic, so resumed and multi-worker runs stay exact, and the skipped names
    travel with the sample to the main process, where `BadFileTracker` counts them. Evaluation
    (`replace_bad=False`): the sample's image is None, so `collate_samples` leaves it out (and keeps its
    report) and no image is measured twice.
    """

    def __init__(self, records: RecordSource, decoder: SampleDecoder, max_attempts: int = 64, *, replace_bad: bool = True) -> None:
        self.records = records
        self.decoder = decoder
        self.max_attempts = max_attempts
        self.replace_bad = replace_bad

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict:
        if not self.replace_bad:
            return self.decoder(self.records.load(index), self.records.name(index))
        reports = {"bad": [], "small": 0}
        for attempt in range(min(self.max_attempts, len(self))):
            current = (index + attempt) % len(self)
            sample = self.decoder(self.records.load(current), self.records.name(current))
            if sample["pixels"] is not None:
                return merge_reports(reports, sample)
            reports = merge_reports(reports, sample)
        examples = "; ".join(f"{n}: {r}" for n, r in reports["bad"][:3]) or f"{reports['small']} images smaller than the crop"
        raise ConfigError(f"data: {self.max_attempts} images in a row from {self.records.name(index)} were unusable ({examples})")


def collate_samples(samples: list[dict]) -> dict:
    """Stacks the images (samples without one are left out: an evaluation batch may hold fewer, or none);
    concatenates the bad-file reports so the main process sees every one; keeps the furthest stream
    position of each reader (WebDataset resume)."""
    positions: dict[int, tuple[int, int]] = {}
    for sample in samples:
        if "reader" in sample:
            positions[sample["reader"]] = max(positions.get(sample["reader"], (0, 0)), tuple(sample["position"]))
    images = [s["pixels"] for s in samples if s["pixels"] is not None]
    return {
        "pixels": torch.stack(images) if images else torch.empty(0),
        "bad": [item for s in samples for item in s["bad"]],
        "small": sum(s["small"] for s in samples),
        "positions": positions,
    }


def iterate_samples(dataset: Dataset | IterableDataset):
    """The samples of a map-style or iterable dataset, in order."""
    return iter(dataset) if isinstance(dataset, IterableDataset) else (dataset[i] for i in range(len(dataset)))


def first_usable(dataset: Dataset | IterableDataset, count: int):
    """The first `count` samples with an image."""
    if count <= 0:
        return
    taken = 0
    for sample in iterate_samples(dataset):
        if sample["pixels"] is not None:
            yield sample
            taken += 1
            if taken == count:
                return
