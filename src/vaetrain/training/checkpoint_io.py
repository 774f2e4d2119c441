"""Checkpoint files that are never seen half-written, and a failed save that is one line and loses nothing.

`AtomicCheckpointIO` streams the checkpoint into a temporary file in the target folder, flushes and
fsyncs it, renames it over the target (atomic on POSIX) and fsyncs the folder. A kill at any moment
leaves either the previous file or the new one; a write that fails (disk full, permissions) removes the
temporary file and raises `CheckpointWriteError` naming the path, with the previous checkpoint intact.
Remote paths (s3://, gs://, ...) are left to Lightning's own writer.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, BinaryIO

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

from vaetrain.errors import VaetrainError


class CheckpointWriteError(VaetrainError):
    """A checkpoint could not be written; the previous one is untouched."""


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint I/O with atomic, fsynced local writes (the module installs it unless another
    CheckpointIO plugin was given)."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        if "://" in str(path):
            return super().save_checkpoint(checkpoint, path, storage_options)
        path = Path(path)
        temporary = path.with_name(f".{path.name}.{os.getpid()}.partial")
        for stale in path.parent.glob(f".{path.name}.*.partial"):  # left by a process killed mid-write
            stale.unlink(missing_ok=True)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(temporary, "wb") as handle:
                self.write(checkpoint, handle)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, path)
            _fsync_folder(path.parent)
        except OSError as error:
            temporary.unlink(missing_ok=True)
            reason = error.strerror or str(error)
            raise CheckpointWriteError(f"checkpoint: cannot write '{path}': {reason}; the previous checkpoint is intact") from error
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise

    def write(self, checkpoint: dict[str, Any], handle: BinaryIO) -> None:
        """Serialises into the open temporary file (tests override it: slow writes, a full disk)."""
        torch.save(checkpoint, handle)

    def remove_checkpoint(self, path) -> None:
        super().remove_checkpoint(path)
        if "://" not in str(path):
            _fsync_folder(Path(path).parent)


def _fsync_folder(folder: Path) -> None:
    """Makes the rename itself durable (the folder's entry), where the platform allows it."""
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)
