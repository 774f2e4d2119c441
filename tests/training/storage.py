"""Checkpoint writers for crash tests, named on the command line as `--trainer.plugins tests.training.storage.X`.
Their behaviour is set by environment variables, so a subprocess run can be steered from the test."""

import errno
import io
import os
import time
from pathlib import Path

import torch

from vaetrain.training.checkpoint_io import AtomicCheckpointIO


class SlowCheckpointIO(AtomicCheckpointIO):
    """Writes in small chunks with pauses; $VAETRAIN_TEST_MARKERS/writing exists from before the temporary file
    is opened until after the rename, and each save is followed by a quiet pause (room for a kill between writes)."""

    def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
        marker = Path(os.environ["VAETRAIN_TEST_MARKERS"]) / "writing"
        marker.write_text(str(os.getpid()))
        super().save_checkpoint(checkpoint, path, storage_options)
        marker.unlink(missing_ok=True)
        time.sleep(float(os.environ.get("VAETRAIN_TEST_QUIET_PAUSE", "0.5")))

    def write(self, checkpoint, handle) -> None:
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)
        data = buffer.getvalue()
        chunk = max(1, len(data) // 20)
        for start in range(0, len(data), chunk):
            handle.write(data[start : start + chunk])
            handle.flush()
            time.sleep(float(os.environ.get("VAETRAIN_TEST_WRITE_PAUSE", "0.05")))


class FullDiskCheckpointIO(AtomicCheckpointIO):
    """Writes the first $VAETRAIN_TEST_GOOD_SAVES checkpoints, then fails half-way as a full disk does."""

    saves = 0

    def write(self, checkpoint, handle) -> None:
        FullDiskCheckpointIO.saves += 1
        if FullDiskCheckpointIO.saves > int(os.environ.get("VAETRAIN_TEST_GOOD_SAVES", "1")):
            handle.write(b"\0" * 1024)  # part of the file reached the disk
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        super().write(checkpoint, handle)
