"""What the GAN step needs from the world around it: an engine that runs its backward passes and optimizer
steps (see `training.engines`), and how a network is declared (`Network`: an attribute name and its roles).
The networks it trains are a holder with an attribute (or None) for every member of
`training.networks.NETWORKS` (the core networks and every unit's)."""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Literal, Protocol

import torch

Trained = str
"""An optimizer's name: `generator`, `discriminator`, or a unit's network with the role `trained` (its own optimizer)."""
Phase = Literal["generator", "discriminator", "both"]
NetworkRole = Literal["generator", "discriminator", "trained", "frozen", "shard_blocks", "shard", "channels_last", "compile", "probe_restore"]


@dataclass(frozen=True)
class Network:
    """One network of the holder: the attribute that holds it (or None) and its roles (see `training.networks`)."""

    name: str
    roles: frozenset[NetworkRole]
    what: str


class Engine(Protocol):
    """How backward passes and optimizer steps run. `optimizer_step` must call `step.prepare_gradients`
    once the gradients are final (unscaled) and before the update."""

    world_size: int

    def backward(self, loss: torch.Tensor) -> None: ...

    def accumulating(self, network: Trained, sync: bool) -> AbstractContextManager:
        """Around `network`'s backward: only its parameters take gradients; `sync`: all-reduce them."""

    def optimizer_step(self, network: Trained) -> None: ...

    def zero_grad(self, network: Trained) -> None: ...

    def mean_over_processes(self, tensor: torch.Tensor) -> torch.Tensor: ...

    def gather(self, tensor: torch.Tensor) -> torch.Tensor:
        """Every process's `tensor` (the same shape on all), stacked in rank order: (processes, ...)."""

    def loss_scale(self) -> float:
        """The factor `backward` multiplies losses by (a loss scaler's scale under fp16; else 1)."""
