"""Record-backed sources: a folder (optionally a listed subset) or a Hugging Face dataset, read by index.

The validation part is evenly spaced records of the sorted list; training reads `ResumableImageStream`,
whose content depends only on the batch number, so a run resumes at `start_sample` exactly.
"""

from __future__ import annotations

import warnings
from typing import Any

from torch.utils.data import Dataset, DistributedSampler, IterableDataset, Subset

from vaetrain.data.decoding.samples import SampleDecoder
from vaetrain.data.quality import scan_usable
from vaetrain.data.sources.folders import split_train_val
from vaetrain.data.sources.records import FileRecords, RecordSource, folder_files, load_hf_records
from vaetrain.data.sources.spec import Bucket, Part, SourceSpec, StreamLayout
from vaetrain.data.streams.buckets import BucketPlan, assign_buckets
from vaetrain.data.streams.decoded import DecodedImages
from vaetrain.data.streams.resumable import ResumableImageStream


class RecordImages:
    """Folders, file lists and Hugging Face datasets behind the `SampleSource` interface."""

    supports_buckets = True

    def __init__(self, spec: SourceSpec) -> None:
        self.spec = spec
        self._parts: dict[str, RecordSource] | None = None

    def prepare(self) -> None:
        if self._parts is not None:
            return
        spec = self.spec
        if spec.kind == "hf":
            records = load_hf_records(str(spec.path), spec.split, spec.image_column)
        else:
            records = FileRecords(folder_files(spec.root(), spec.file_list, spec.videos))
        train, val = split_train_val(list(range(len(records))), spec.val_size)
        self._parts = {"all": records, "train": records.subset(train), "val": records.subset(val)}

    def records(self, part: Part) -> RecordSource:
        self.prepare()
        return self._parts[part]

    def images(self, part: Part, decoder: SampleDecoder, *, rank: int = 0, world_size: int = 1, max_items: int | None = None) -> Dataset:
        records = self.records(part)
        if max_items is not None and len(records) > max_items:
            step = len(records) // max_items
            records = records.subset(list(range(0, len(records), step))[:max_items])
        dataset = DecodedImages(records, decoder, replace_bad=False)
        if world_size == 1:
            return dataset
        # DistributedSampler's share: padded so every rank runs the same number of (collective) forwards
        return Subset(dataset, list(DistributedSampler(dataset, world_size, rank, shuffle=False)))

    def keep_usable(self, part: Part, decoder: SampleDecoder) -> tuple[int, list[tuple[str, str]]]:
        usable, bad = scan_usable(DecodedImages(self.records(part), decoder, replace_bad=False))
        if bad:
            self._parts[part] = self._parts[part].subset(usable)
        return len(usable), bad

    def train_samples(self, decoder: SampleDecoder, layout: StreamLayout, buckets: list[Bucket] | None = None) -> IterableDataset:
        records = self.records("train")
        plan, bucket_datasets = None, None
        if buckets:
            plan = BucketPlan(assign_buckets(records, [(h, w) for h, w, _ in buckets]), layout.batch_size, layout.seed)
            bucket_datasets = [DecodedImages(records, bucket_decoder) for _, _, bucket_decoder in buckets]
        return ResumableImageStream(
            DecodedImages(records, decoder),
            batch_size=layout.batch_size,
            seed=layout.seed,
            rank=layout.rank,
            world_size=layout.world_size,
            start_batch=_start_batch(layout),
            bucket_plan=plan,
            bucket_datasets=bucket_datasets,
        )

    def observe(self, batch: dict) -> None:
        return None

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        return None


def _start_batch(layout: StreamLayout) -> int:
    """The micro-batch of this process that follows `start_sample` images of all processes together; the
    number of processes and the micro-batch may differ from the run that saved the checkpoint."""
    per_batch = layout.world_size * layout.batch_size
    batch, remainder = divmod(layout.start_sample, per_batch)
    if remainder:  # only when the batch shape changed: continue at the next whole global batch
        warnings.warn(
            f"resuming after {layout.start_sample} samples with {layout.world_size} x {layout.batch_size} per batch: "
            f"skipping {per_batch - remainder} samples to the next whole batch",
            stacklevel=2,
        )
        batch += 1
    return batch
