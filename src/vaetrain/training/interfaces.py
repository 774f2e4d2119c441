"""What the GAN step needs from the world around it: the networks it trains and an engine that runs its
backward passes and optimizer steps (see `training.engines`)."""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Literal, Protocol

import torch
from torch import nn

from vaetrain.losses.gan import LeCamAnchors

Network = Literal["generator", "discriminator"]
Phase = Literal["generator", "discriminator", "both"]


class GanNetworks(Protocol):
    """The networks the step trains (the LightningModule is one)."""

    autoencoder: nn.Module
    discriminator: nn.Module
    perceptual: nn.Module | None
    ema: nn.Module | None
    lecam_anchors: LeCamAnchors | None
    alignment_encoder: nn.Module | None
    alignment_projection: nn.Module | None
    teacher: nn.Module | None  # the VAE being distilled (frozen), or None


class Engine(Protocol):
    """How backward passes and optimizer steps run. `optimizer_step` must call `step.prepare_gradients`
    once the gradients are final (unscaled) and before the update."""

    world_size: int

    def backward(self, loss: torch.Tensor) -> None: ...

    def accumulating(self, network: Network, sync: bool) -> AbstractContextManager:
        """Around `network`'s backward: only its parameters take gradients; `sync`: all-reduce them."""

    def optimizer_step(self, network: Network) -> None: ...

    def zero_grad(self, network: Network) -> None: ...

    def mean_over_processes(self, tensor: torch.Tensor) -> torch.Tensor: ...

    def loss_scale(self) -> float:
        """The factor `backward` multiplies losses by (a loss scaler's scale under fp16; else 1)."""
