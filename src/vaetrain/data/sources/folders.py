"""A recursive folder of image files, split deterministically into train and validation."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import TypeVar

from vaetrain.data.decoding.samples import IMAGE_TYPES
from vaetrain.data.decoding.video import VIDEO_TYPES, frame_files
from vaetrain.errors import ConfigError

T = TypeVar("T")

IMAGE_EXTENSIONS = frozenset(f".{kind}" for kind in IMAGE_TYPES)
VIDEO_EXTENSIONS = frozenset(f".{kind}" for kind in VIDEO_TYPES)


def sample_images_dir() -> Path:
    """The dozen CC0 clothing photos bundled with the package: the embedded default data set."""
    return Path(str(resources.files("vaetrain.data") / "samples"))


def list_images(root: str | Path, videos: bool = False) -> list[Path]:
    """All image files below `root` (with `videos`: all video files and frame folders, folders of images
    without subfolders), sorted by relative path so every process sees the same order."""
    root = Path(root).expanduser()
    if not root.exists():
        raise ConfigError(f"data.path: {'video' if videos else 'image'} folder '{root}' does not exist")
    if not root.is_dir():
        raise ConfigError(f"data.path: '{root}' is not a folder")
    extensions = VIDEO_EXTENSIONS if videos else IMAGE_EXTENSIONS
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in extensions and p.is_file())
    if videos:
        files = sorted(files + [d for d in [root, *root.rglob("*")] if d.is_dir() and _is_frame_folder(d)])
    if not files:
        kinds = ", ".join(sorted(extensions)) + (" or frame folders" if videos else "")
        raise ConfigError(f"data.path: no {'videos' if videos else 'images'} ({kinds}) found in '{root}' or its subfolders")
    return files


def _is_frame_folder(folder: Path) -> bool:
    return not any(c.is_dir() for c in folder.iterdir()) and bool(frame_files(folder))


def split_train_val(files: list[T], val_size: int | float) -> tuple[list[T], list[T]]:
    """Evenly spaced items (files, or record indices) form the validation split: deterministic, and spread over every subfolder.

    `val_size` is a count (int >= 1) or a fraction (0 < float < 1); at least one image stays in train. 0: no
    validation part (another source validates).
    """
    if val_size == 0:
        return list(files), []
    count = int(val_size) if isinstance(val_size, int) or val_size >= 1 else round(len(files) * val_size)
    count = max(1, min(count, len(files) - 1)) if len(files) > 1 else 0
    if count == 0:
        return list(files), list(files)
    val_indices = {round(i * len(files) / count) for i in range(count)}
    val = [f for i, f in enumerate(files) if i in val_indices]
    train = [f for i, f in enumerate(files) if i not in val_indices]
    return train, val
