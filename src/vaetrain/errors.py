"""vaetrain's own errors: each reaches the user as one line (the command line prints `one_line(error)`)."""

from __future__ import annotations

import re
from pathlib import Path


class VaetrainError(Exception):
    """An error whose message is meant for the user as it is: one line naming the key, file or count."""


class ConfigError(VaetrainError, ValueError):
    """A setting, path or input that cannot work; the message names the key or file."""


class PretrainedWeightsUnavailable(ConfigError):
    """A pretrained network's weights are neither cached nor downloadable; the message names the file and
    the folder to put it in."""


class TrainingDiverged(VaetrainError):
    """Too many consecutive updates had non-finite gradients and were skipped."""


def weights_unavailable(what: str, file: str, error: BaseException, hint: str) -> PretrainedWeightsUnavailable:
    """The one-line error for a torchvision/torch-hub weights file that is neither cached nor downloadable."""
    import torch

    where = Path(torch.hub.get_dir()) / "checkpoints" / file
    return PretrainedWeightsUnavailable(
        f"{what} needs the ImageNet weights file {file}: none at {where} and the download failed "
        f"({type(error).__name__}); put the file there (or set TORCH_HOME) {hint}"
    )


_WORKER_TRACEBACK = "\nOriginal Traceback (most recent call last):"
_QUALIFIED_NAME = re.compile(r"^[A-Za-z_][\w.]*: ")


def one_line(error: BaseException) -> str:
    """The error's own message on one line, also when a DataLoader worker raised it: PyTorch re-raises a
    worker's exception with the worker's whole traceback as its message, ending in `module.Name: message`."""
    text = str(error).strip()
    if _WORKER_TRACEBACK in text:
        last = [line for line in text.splitlines() if line.strip()][-1]
        text = _QUALIFIED_NAME.sub("", last, count=1)
    lines = text.splitlines()
    return lines[0] if lines else type(error).__name__


class LongerThanTrained(UserWarning):
    """A clip or video longer than the longest clip the model trained on (its checkpoint records it): a causal
    video VAE reads every chunk past that length through feature caches it never saw in training."""
