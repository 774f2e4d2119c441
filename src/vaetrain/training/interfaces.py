"""What the GAN step needs from the world around it: an engine that runs its backward passes and optimizer
steps (see `training.engines`). The networks it trains are a module with an attribute (or None) for every
member of `training.networks.NETWORKS` (the LightningModule is one)."""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Literal, Protocol

import torch

Network = Literal["generator", "discriminator"]
Phase = Literal["generator", "discriminator", "both"]


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

    def gather(self, tensor: torch.Tensor) -> torch.Tensor:
        """Every process's `tensor` (the same shape on all), stacked in rank order: (processes, ...)."""

    def loss_scale(self) -> float:
        """The factor `backward` multiplies losses by (a loss scaler's scale under fp16; else 1)."""
