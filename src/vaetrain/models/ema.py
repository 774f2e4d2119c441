"""Exponential moving average of the autoencoder, kept in fp32 beside the trained weights."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn


@dataclass(frozen=True)
class EMAConfig:
    """The EMA copy of the autoencoder's weights (what validation, export and eval use once it is updated).
    `start_step` and `every_n_steps` count generator optimizer steps."""

    enabled: bool = True
    """Keep an EMA copy (fp32, never cast); off: the trained weights are validated and exported."""
    decay: float = 0.999
    """ema <- decay * ema + (1 - decay) * weights at each update (the first update copies the weights)."""
    start_step: int = 0
    """Generator step of the first update."""
    every_n_steps: int = 1
    """Update every this many generator steps from start_step."""


def build_ema(model: nn.Module, decay: float) -> AveragedModel:
    """A frozen copy updated by `update_parameters`; as a submodule it moves, saves and loads with the model.

    `use_buffers=True` averages buffers too, so the copy is a complete model for validation and export.
    """
    ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)
    ema.requires_grad_(False)
    return ema
