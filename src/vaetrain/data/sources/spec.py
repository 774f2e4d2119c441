"""Where images come from: a `SourceSpec` names a collection; `vaetrain.data.sample_sets.open_source` gives the
one class that reads that kind of collection, behind the `SampleSource` interface defined here, which the
data module and `evaluation_samples` use.

Two kinds exist: record-backed (`RecordImages`: folders, file lists, Hugging Face datasets; random access,
split by index) and shard-backed (`ShardImages`: WebDataset tar shards; sequential, split by shard).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Literal, Protocol

from torch.utils.data import Dataset, IterableDataset

from vaetrain.data.decoding.samples import SampleDecoder
from vaetrain.data.sources.folders import sample_images_dir

SourceKind = Literal["auto", "folder", "hf", "webdataset"]
Part = Literal["train", "val", "all"]
_HF_MARKERS = ("dataset_dict.json", "state.json", "dataset_info.json")


@dataclass(frozen=True)
class SourceSpec:
    """Everything needed to open the same collection again; checkpoints store it (resolved)."""

    path: str | None = None
    """A folder, a Hugging Face dataset (saved folder, parquet/arrow folder or Hub id) or a shard pattern;
    None: the images bundled with vaetrain."""
    kind: SourceKind = "auto"
    """`auto` infers it from `path`."""
    split: str = "train"
    """Hugging Face split."""
    image_column: str = "image"
    """Hugging Face column holding the images."""
    file_list: str | None = None
    """txt or csv selecting part of a folder."""
    val_size: int | float = 0.05
    """Validation part: a count (of images, or of shards) or a fraction below 1."""
    videos: bool = False
    """The collection holds videos (files, or frame folders in a folder), read as clips."""

    def resolved(self) -> SourceSpec:
        """The kind decided and a local path made absolute, so the spec means the same from any folder."""
        kind = resolve_kind(self)
        path = self.path
        if path is not None and "://" not in path and not path.startswith("pipe:"):
            local = Path(path).expanduser()
            if kind != "hf" or local.exists():
                path = os.path.abspath(local)
        return replace(self, kind=kind, path=path)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> SourceSpec:
        return cls(**{k: v for k, v in values.items() if k in cls.__dataclass_fields__})

    def root(self) -> Path:
        return Path(self.path).expanduser() if self.path else sample_images_dir()


def resolve_kind(spec: SourceSpec) -> str:
    """`auto`: a `.tar` pattern that is not a folder is WebDataset; a folder holding a saved `datasets`
    dataset or parquet/arrow files, or an `owner/name` id that is not a local path, is `hf`; any other
    folder is `folder`."""
    if spec.kind != "auto":
        return spec.kind
    if spec.path is None:
        return "folder"
    root = spec.root()
    if ".tar" in spec.path and not root.is_dir():
        return "webdataset"
    if root.is_dir():
        if any((root / m).exists() for m in _HF_MARKERS) or any(root.glob("*.parquet")) or any(root.glob("*.arrow")):
            return "hf"
        return "folder"
    if not root.exists() and "/" in spec.path and not spec.path.startswith((".", "/", "~")):
        return "hf"
    return "folder"


@dataclass(frozen=True)
class StreamLayout:
    """How this process reads the training stream."""

    batch_size: int
    seed: int = 0
    rank: int = 0
    world_size: int = 1
    start_sample: int = 0  # images all processes together have already trained on (resume)
    readers: int = 1  # loader workers of this process
    shuffle_buffer: int = 1000


Bucket = tuple[int, int, SampleDecoder]  # height, width, the decoder that crops to it


class SampleSource(Protocol):
    """One kind of collection. `prepare` lists it (and may raise a one-line ConfigError); the rest read it."""

    spec: SourceSpec
    supports_buckets: bool

    def prepare(self) -> None: ...

    def images(self, part: Part, decoder: SampleDecoder, *, rank: int = 0, world_size: int = 1, max_items: int | None = None) -> Dataset | IterableDataset:
        """Finite, in order: `max_items` evenly spaced images of `part`, this rank's share of them; a bad file
        is a sample without an image (reported in its `bad` list), never replaced by another image."""

    def train_samples(self, decoder: SampleDecoder, layout: StreamLayout, buckets: list[Bucket] | None = None) -> IterableDataset:
        """The endless, resumable training stream of this process."""

    def keep_usable(self, part: Part, decoder: SampleDecoder) -> tuple[int, list[tuple[str, str]]]:
        """Decodes every image of `part` once: (usable images, (name, reason) of the others). Record sources
        then leave the others out of the part; shards cannot, and their bad files stay left out per batch."""

    def observe(self, batch: dict) -> None:
        """Records a training batch's resume position (shards); nothing for records."""

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...
