"""Where encoded images come from: a folder (optionally a listed subset) or a Hugging Face dataset.

A record source is map-style: `len()`, `name(i)` for messages, and `load(i)` giving encoded bytes or a
path; decoding is left to `decode_image`, so every source handles bad files the same way.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Protocol

from vaetrain.data.sources.folders import list_images
from vaetrain.errors import ConfigError


class RecordSource(Protocol):
    def __len__(self) -> int: ...

    def name(self, index: int) -> str: ...

    def load(self, index: int) -> bytes | Path: ...


class FileRecords:
    """Image files on disk."""

    def __init__(self, files: list[Path]) -> None:
        self.files = files

    def __len__(self) -> int:
        return len(self.files)

    def name(self, index: int) -> str:
        return str(self.files[index])

    def load(self, index: int) -> Path:
        return self.files[index]

    def subset(self, indices: list[int]) -> FileRecords:
        return FileRecords([self.files[i] for i in indices])


def folder_files(root: Path, file_list: str | None = None, videos: bool = False) -> list[Path]:
    """All images below `root`, or those named in `file_list` (txt: one path a line; csv: a `path`,
    `file_name` or `image` column, else the first), relative to `root` or absolute."""
    if file_list is None:
        return list_images(root, videos)
    list_path = Path(file_list).expanduser()
    if not list_path.is_file():
        raise ConfigError(f"data.file_list: '{list_path}' does not exist")
    names = _read_file_list(list_path)
    files = [(Path(n) if Path(n).is_absolute() else root / n) for n in names]
    missing = [str(f) for f in files if not (f.exists() if videos else f.is_file())]
    if missing:
        raise ConfigError(f"data.file_list: {len(missing)} listed files do not exist, e.g. '{missing[0]}'")
    if not files:
        raise ConfigError(f"data.file_list: '{list_path}' lists no files")
    return sorted(files)


def _read_file_list(path: Path) -> list[str]:
    text = path.read_text()
    if path.suffix.lower() != ".csv":
        return [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]
    rows = list(csv.reader(text.splitlines()))
    if not rows:
        return []
    header = [h.strip().lower() for h in rows[0]]
    for column in ("path", "file_name", "filename", "image", "file"):
        if column in header:
            index = header.index(column)
            return [row[index].strip() for row in rows[1:] if len(row) > index and row[index].strip()]
    return [row[0].strip() for row in rows if row and row[0].strip()]


class HuggingFaceRecords:
    """One split of a Hugging Face dataset; the image column is read undecoded so bad images are
    caught by `decode_image`, not by `datasets` in the middle of a batch."""

    def __init__(self, dataset, image_column: str, label: str) -> None:
        self.dataset = dataset
        self.image_column = image_column
        self.label = label

    def __len__(self) -> int:
        return len(self.dataset)

    def name(self, index: int) -> str:
        return f"{self.label}[{index}]"

    def load(self, index: int) -> bytes | Path:
        value = self.dataset[index][self.image_column]
        if isinstance(value, dict):
            if value.get("bytes"):
                return value["bytes"]
            if value.get("path"):
                return Path(value["path"])
            return b""
        if isinstance(value, (bytes, bytearray)):
            return bytes(value)
        if isinstance(value, str):
            return Path(value)
        raise ConfigError(f"data.image_column '{self.image_column}' holds {type(value).__name__}, not an image")

    def subset(self, indices: list[int]) -> HuggingFaceRecords:
        return HuggingFaceRecords(self.dataset.select(indices), self.image_column, self.label)


def load_hf_records(path: str, split: str, image_column: str) -> HuggingFaceRecords:
    """A dataset saved with `save_to_disk`, a local imagefolder/parquet/arrow folder, or a Hub id.

    Never runs a dataset's own code (no `trust_remote_code`)."""
    import datasets

    local = Path(path).expanduser()
    try:
        if local.is_dir() and ((local / "dataset_dict.json").exists() or (local / "state.json").exists()):
            dataset = datasets.load_from_disk(str(local))
            if isinstance(dataset, datasets.DatasetDict):
                if split not in dataset:
                    raise ConfigError(f"data.split '{split}' not in {path} (has {', '.join(dataset)})")
                dataset = dataset[split]
        else:
            dataset = datasets.load_dataset(str(local) if local.exists() else path, split=split)
    except ConfigError:
        raise
    except Exception as error:  # noqa: BLE001 - datasets raises many kinds; all mean "cannot load"
        raise ConfigError(f"data.path: cannot load Hugging Face dataset '{path}': {str(error).splitlines()[0]}") from error
    if image_column not in dataset.column_names:
        raise ConfigError(f"data.image_column '{image_column}' not in dataset '{path}' (columns: {', '.join(dataset.column_names)})")
    if isinstance(dataset.features[image_column], datasets.Image):
        dataset = dataset.cast_column(image_column, datasets.Image(decode=False))
    return HuggingFaceRecords(dataset, image_column, label=f"{path}:{split}")
