"""Exponential moving average of the autoencoder, kept in fp32 beside the trained weights."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn


@dataclass(frozen=True)
class EMAConfig:
    """`start_step` and `every_n_steps` count generator optimizer steps."""

    enabled: bool = True
    decay: float = 0.999
    start_step: int = 0
    every_n_steps: int = 1


def build_ema(model: nn.Module, decay: float) -> AveragedModel:
    """A frozen copy updated by `update_parameters`; as a submodule it moves, saves and loads with the model.

    `use_buffers=True` averages buffers too, so the copy is a complete model for validation and export.
    """
    ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)
    ema.requires_grad_(False)
    return ema
