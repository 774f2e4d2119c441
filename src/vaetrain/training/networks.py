"""Which network plays which role, declared once. Every consumer (the optimizers, the step's gradient
guard, the memory probe's restore, channels-last, compilation, FSDP sharding, the checkpoint's frozen-key
filter) reads `NETWORKS`; a new network is one line here and an attribute of that name on the module.

Roles:
- `generator` / `discriminator`: trained by that optimizer (its trainable parameters, in this order);
- `frozen`: never trained, rebuilt at start-up, left out of checkpoints (LPIPS's VGG alone is 58 MB);
- `shard_blocks` (an autoencoder: its family's shard units) / `shard`: sharded as one unit, under FSDP2;
- `channels_last`: weights stored NHWC when the run uses channels-last;
- `compile`: compiled under `speed.compile` (an autoencoder's encoder and decoder, else the module);
- `probe_restore`: its parameters and buffers are put back after the memory probe's steps.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from torch import nn

Role = Literal["generator", "discriminator", "frozen", "shard_blocks", "shard", "channels_last", "compile", "probe_restore"]


@dataclass(frozen=True)
class Network:
    """One network of the training module: the attribute that holds it (or None) and its roles."""

    name: str
    roles: frozenset[Role]
    what: str


def _network(name: str, roles: str, what: str) -> Network:
    return Network(name, frozenset(roles.split()), what)


NETWORKS: tuple[Network, ...] = (
    _network("autoencoder", "generator shard_blocks channels_last compile probe_restore", "the autoencoder being trained"),
    _network("alignment_projection", "generator shard probe_restore", "VA-VAE's 1x1 projection of the latent (trained, never exported)"),
    _network("discriminator", "discriminator shard channels_last compile probe_restore", "PatchGAN or VGG16"),
    _network("ema", "shard_blocks channels_last probe_restore", "the EMA copy of the autoencoder (AveragedModel)"),
    _network("lecam_anchors", "probe_restore", "LeCam's moving anchors (buffers)"),
    _network("perceptual", "frozen channels_last compile", "LPIPS"),
    _network("alignment_encoder", "frozen", "VA-VAE's vision encoder"),
    _network("teacher", "frozen shard_blocks channels_last", "the VAE being distilled"),
    _network("val_metrics", "frozen", "validation metrics, with rFID's Inception"),
)


def names_with(role: Role) -> tuple[str, ...]:
    return tuple(network.name for network in NETWORKS if role in network.roles)


def networks_with(module: nn.Module, role: Role) -> list[nn.Module]:
    """The module's networks that have `role` and exist (an unused term's network is None)."""
    return [network for name in names_with(role) if (network := getattr(module, name, None)) is not None]


def trainable_parameters(module: nn.Module, role: Literal["generator", "discriminator"]) -> list[tuple[str, nn.Parameter]]:
    """(name as in the module's state dict, parameter) of every trainable parameter of `role`'s networks."""
    return [
        (f"{name}.{key}", parameter)
        for name in names_with(role)
        if (network := getattr(module, name, None)) is not None
        for key, parameter in network.named_parameters()
        if parameter.requires_grad
    ]


def frozen_prefixes() -> tuple[str, ...]:
    """State-dict prefixes of the frozen networks (left out of checkpoints)."""
    return tuple(f"{name}." for name in names_with("frozen"))


def compile_units(network: nn.Module) -> list[nn.Module]:
    """What `compile` compiles of a network: an autoencoder's encoder and decoder (training calls its
    `encode`/`decode`, not `forward`), else the network itself."""
    halves = [getattr(network, half, None) for half in ("encoder", "decoder")]
    return [half for half in halves if half is not None] or [network]
