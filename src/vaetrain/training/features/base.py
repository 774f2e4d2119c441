"""What a training feature is: one unit that declares its networks, refuses the settings it cannot go with,
adds to the forward and to each network's loss, observes each micro-batch and commits or discards what it
buffered after the update guard. The step, the module and the preflight loop over the run's units and name
none of them; a new feature is a subclass in its own file and one line in `features.FEATURES`.

The hooks, in the order one micro-batch calls them (each a no-op here):
- `begin(images)`: the micro-batch as the forward reads it (a transformed or downscaled batch);
- `encode(images)`: a whole encoder path in place of the autoencoder's own, else None;
- `on_latents(latents)`: the latent the decoder reads, and terms on it;
- `decode(latents)`: a decoder path in place of the family's (a quantiser's), else None;
- `after_generator_backward(loss_scale, accumulate)`: what a backward pass left to observe;
- `prepare_real(real, discriminator_steps)` and `discriminator_terms(...)`: the discriminator's regularisers;
- `network_loss(network)`: after the discriminator's half, the loss of the unit's own network (role
  `trained`, its own optimizer: `optimizer_config`), from what the forward left;
- `commit(network, update)`: after `network`'s optimizer step, once per accumulated batch; `update.finite`
  says whether the guard let it through (a skipped one must leave no value in any buffer: `discard`).
Refusals: `conflicts(run)` yields one-line messages (the first raises; a unit that `reads_encoder_latents`
is refused beside one that `replaces_encoder` by the registry's loop), `check_sizes(sides)` likewise for
the training image sizes, `refuse_accumulation(k)` for a memory plan or global batch that accumulates.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn

from vaetrain.losses.config import LossConfig
from vaetrain.losses.objective import Processes
from vaetrain.models.autoencoder import AutoencoderConfig
from vaetrain.models.discriminator import DiscriminatorConfig
from vaetrain.models.ema import EMAConfig
from vaetrain.training.interfaces import Network, NetworkRole

if TYPE_CHECKING:
    from vaetrain.training.diagnostics import Alarm
    from vaetrain.training.interfaces import Engine


@dataclass(frozen=True)
class Setup:
    """What units are chosen and built from: the run's config blocks and the networks a caller injected
    (by the attribute names the units declare in `networks`; tests inject random or tiny ones)."""

    autoencoder: AutoencoderConfig
    discriminator: DiscriminatorConfig
    loss: LossConfig
    ema: EMAConfig
    injected: dict[str, nn.Module | None] = field(default_factory=dict)


@dataclass(frozen=True)
class Run:
    """What refusals read: the configs, the built autoencoder's family and the names of the active units."""

    setup: Setup
    family: Any
    in_channels: int
    active: frozenset[str]


@dataclass
class Latents:
    """One forward's latent stage, handed through every unit's `on_latents` in order: the images, the latent
    the decoder will read, what the reconstruction is compared with, extra generator losses and logs."""

    images: torch.Tensor
    latents: torch.Tensor
    target: torch.Tensor
    grad: bool
    extra: list[torch.Tensor] = field(default_factory=list)
    logs: dict[str, torch.Tensor] = field(default_factory=dict)


@dataclass
class Encoded:
    """An encoder path's result: the posterior mean and log-variance (None: deterministic), the latent the
    latent stage starts from, what the reconstruction is compared with, extra losses and logs."""

    mean: torch.Tensor
    logvar: torch.Tensor | None
    latents: torch.Tensor
    target: torch.Tensor
    extra: list[torch.Tensor] = field(default_factory=list)
    logs: dict[str, torch.Tensor] = field(default_factory=dict)


@dataclass(frozen=True)
class Update:
    """After a network's optimizer step: whether it was finite, and how to reach the other processes."""

    finite: bool
    processes: Processes | None
    engine: Engine


class Feature:
    """A training feature (see the module docstring). `networks` declares the attributes it sets on the
    network holder with their roles; `build` sets them; the holder keeps None for an inactive unit's."""

    name: ClassVar[str] = ""
    networks: ClassVar[tuple[Network, ...]] = ()
    no_accumulation: ClassVar[str | None] = None
    """The setting to name when this unit forbids the memory planner to accumulate micro-batches."""
    setting: ClassVar[str] = ""
    """The setting that switches it on, as the shared refusals name it."""
    replaces_encoder: ClassVar[bool] = False
    """Its `encode` gives latents that are not the autoencoder encoder's."""
    alarms: ClassVar[tuple[Alarm, ...]] = ()
    """Logged values the diagnostics warn about when they stay below a floor (`training.diagnostics`)."""
    reads_encoder_latents: ClassVar[bool] = False
    """Its terms need the autoencoder encoder's own latents: refused beside a unit that `replaces_encoder`."""
    quantises_latents: ClassVar[bool] = False
    """Its decode quantises the latents to a discrete set: refused beside a unit that `needs_continuous_latents`."""
    needs_continuous_latents: ClassVar[bool] = False
    """Its terms move or match continuous latents: refused beside a unit that `quantises_latents`."""

    @classmethod
    def wanted(cls, setup: Setup, autoencoder: nn.Module) -> bool:
        """Whether the run's settings switch this unit on."""
        raise NotImplementedError

    def __init__(self, setup: Setup) -> None:
        self.setup = setup
        self.holder: nn.Module | None = None

    def build(self, holder: nn.Module, autoencoder: nn.Module) -> None:
        """Sets this unit's networks on `holder` (after the autoencoder, discriminator, LPIPS and EMA)."""
        self.holder = holder

    def place(self, rank: int, world_size: int) -> None:
        """At set-up: this process's rank among `world_size` (a unit that numbers samples over processes)."""
        return None

    # refusals
    def conflicts(self, run: Run) -> Iterator[str]:
        return iter(())

    def check_sizes(self, sides: list[int], resolution) -> Iterator[str]:
        return iter(())

    def refuse_accumulation(self, micro_batches: int) -> str | None:
        return None

    # one micro-batch
    def begin(self, images: torch.Tensor, factor: int) -> torch.Tensor:
        return images

    def encode(self, forward, images: torch.Tensor) -> Encoded | None:
        return None

    def on_latents(self, stage: Latents, factor: int) -> None:
        return None

    def decode(self, forward, stage: Latents) -> torch.Tensor | None:
        return None

    def after_generator_backward(self, loss_scale: float, accumulate: int) -> None:
        return None

    def prepare_real(self, real: torch.Tensor, discriminator_steps: int) -> torch.Tensor:
        return real

    def discriminator_terms(
        self, real_logits: torch.Tensor, fake_logits: torch.Tensor, real: torch.Tensor, accumulate: int
    ) -> tuple[torch.Tensor | None, dict[str, torch.Tensor]]:
        return None, {}

    # a network with its own optimizer (role `trained`)
    def trained_networks(self) -> tuple[str, ...]:
        return tuple(n.name for n in self.networks if "trained" in n.roles)

    def optimizer_config(self, network: str):
        """The `training.optim.OptimizerConfig` of the unit's `trained` network."""
        raise NotImplementedError

    def network_loss(self, network: str) -> tuple[torch.Tensor | None, dict[str, torch.Tensor]]:
        return None, {}

    # after the update guard
    def commit(self, network: str, update: Update) -> None:
        return None

    def discard(self) -> None:
        return None


def network(name: str, roles: str, what: str) -> Network:
    return Network(name, frozenset(roles.split()), what)


__all__ = ["Encoded", "Feature", "Latents", "NetworkRole", "Run", "Setup", "Update", "network"]
