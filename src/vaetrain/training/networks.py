"""Which network plays which role, declared once. Every consumer (the optimizers, the step's gradient
guard, the memory probe's restore, channels-last, compilation, FSDP sharding, the checkpoint's frozen-key
filter) reads `declared()`: the core networks here (`NETWORKS`) and each registered training unit's own
(`features.FEATURES`, each unit's `networks`); a new network is one line in its unit and an attribute of
that name on the holder.

Roles:
- `generator` / `discriminator`: trained by that optimizer (its trainable parameters, in this order);
- `trained`: a unit's network trained by its own optimizer, named as the network (end-to-end tuning's
  diffusion transformer), stepped after the discriminator on the same accumulated batch;
- `frozen`: never trained, rebuilt at start-up, left out of checkpoints (LPIPS's VGG alone is 58 MB);
- `shard_blocks` (an autoencoder: its family's shard units) / `shard`: sharded as one unit, under FSDP2;
- `channels_last`: weights stored NHWC when the run uses channels-last;
- `compile`: compiled under `speed.compile` (an autoencoder's encoder and decoder, else the module);
- `probe_restore`: its parameters and buffers are put back after the memory probe's steps.
"""

from __future__ import annotations

import torch
from torch import nn

from vaetrain.errors import ConfigError
from vaetrain.losses.perceptual import build_perceptual_loss, channel_triplets, for_channels
from vaetrain.models.autoencoder import build_autoencoder, with_deterministic_posterior
from vaetrain.models.discriminator import build_discriminator
from vaetrain.models.ema import build_ema
from vaetrain.models.families import family_of
from vaetrain.training import features
from vaetrain.training.features import Feature, Setup, build_features
from vaetrain.training.features.base import network
from vaetrain.training.interfaces import Network, NetworkRole
from vaetrain.training.sharding import full_state_dict, is_sharded, shard, shard_autoencoder

NETWORKS: tuple[Network, ...] = (
    network("autoencoder", "generator shard_blocks channels_last compile probe_restore", "the autoencoder being trained"),
    network("discriminator", "discriminator shard channels_last compile probe_restore", "PatchGAN or VGG16"),
    network("ema", "shard_blocks channels_last probe_restore", "the EMA copy of the autoencoder (AveragedModel)"),
    network("perceptual", "frozen channels_last compile", "LPIPS"),
    network("val_metrics", "frozen", "validation metrics, with rFID's Inception"),
)


def declared() -> tuple[Network, ...]:
    """Every network a run can have: the core ones, then each registered unit's, in the registry's order."""
    return NETWORKS + tuple(network for unit in features.FEATURES for network in unit.networks)


def names_with(role: NetworkRole) -> tuple[str, ...]:
    return tuple(network.name for network in declared() if role in network.roles)


def networks_with(module: nn.Module, role: NetworkRole) -> list[nn.Module]:
    """The module's networks that have `role` and exist (an unused term's network is None)."""
    return [network for name in names_with(role) if (network := getattr(module, name, None)) is not None]


def optimizer_names(module: nn.Module) -> list[str]:
    """The run's optimizers in Lightning's order: the generator's, the discriminator's, then one per existing
    network with the role `trained`."""
    return ["generator", "discriminator"] + [name for name in names_with("trained") if getattr(module, name, None) is not None]


def trainable_parameters(module: nn.Module, optimizer: str) -> list[tuple[str, nn.Parameter]]:
    """(name as in the module's state dict, parameter) of every trainable parameter `optimizer` steps: the
    networks with the role `generator` or `discriminator`, or the `trained` network of that name."""
    names = names_with(optimizer) if optimizer in ("generator", "discriminator") else (optimizer,)
    return [
        (f"{name}.{key}", parameter)
        for name in names
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


def build_networks(module: nn.Module, setup: Setup) -> list[Feature]:
    """Sets every member of `NETWORKS` on the module: the core networks from their config blocks (LPIPS None
    where its weight is 0; an injected `perceptual` replaces the configured one), then each active unit's
    (`features.build_features`); returns the active units."""
    loss = setup.loss
    unknown = sorted(set(setup.injected) - {member.name for member in declared()})
    if unknown:
        raise ConfigError(f"AutoencoderModule: no network is named {', '.join(unknown)} (the networks and training units declare: training.networks)")
    module.autoencoder = autoencoder = build_autoencoder(setup.autoencoder)
    image_channels = image_channels_of(autoencoder)
    latent_channels = family_of(autoencoder).latent_channels(autoencoder)
    module.discriminator = build_discriminator(setup.discriminator, image_channels, latent_channels)
    perceptual = setup.injected.get("perceptual")
    if perceptual is None and loss.perceptual_weight > 0:
        channel_triplets(image_channels, loss.perceptual_channels)  # a missing setting fails before VGG loads
        perceptual = build_perceptual_loss(loss.perceptual_network, loss.perceptual_backbone)
    module.perceptual = for_channels(perceptual, image_channels, loss.perceptual_channels)
    module.ema = build_ema(autoencoder, setup.ema.decay) if setup.ema.enabled else None
    return build_features(module, setup, autoencoder)


def image_channels_of(autoencoder: nn.Module) -> int:
    """Channels the autoencoder writes (and the discriminator and LPIPS read)."""
    return family_of(autoencoder).image_channels(autoencoder)[1]


def compile_networks(holder: nn.Module) -> None:
    """Compiles the networks' forwards in place (`nn.Module.compile`), so parameter names, state dicts and
    checkpoints are the same as without compiling (role `compile`)."""
    for member in networks_with(holder, "compile"):
        for unit in compile_units(member):
            unit.compile(dynamic=False)


def set_channels_last(holder: nn.Module, enabled: bool) -> None:
    """Stores the convolution networks' weights (role `channels_last`) as NHWC or NCHW (NDHWC for 3D
    convolutions' weights); batches follow through `in_layout`."""
    for member in networks_with(holder, "channels_last"):
        member._apply(lambda t: t.contiguous(memory_format=memory_layout(t, enabled)) if t.dim() in (4, 5) else t)


def in_layout(images: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """A batch in the networks' memory layout (NHWC under channels_last)."""
    return images.contiguous(memory_format=memory_layout(images, channels_last))


def memory_layout(tensor: torch.Tensor, channels_last: bool) -> torch.memory_format:
    """NHWC (NDHWC for 5-d weights and clips) under channels-last, else contiguous."""
    if not channels_last:
        return torch.contiguous_format
    return torch.channels_last_3d if tensor.dim() == 5 else torch.channels_last


def shard_networks(holder: nn.Module, mesh) -> None:
    """Under `fsdp2` (a device mesh exists): shards the networks marked `shard_blocks` (block by block) and
    `shard` over all processes, once. Without a mesh, nothing."""
    if mesh is None or is_sharded(holder.autoencoder):
        return
    for member in networks_with(holder, "shard_blocks"):
        shard_autoencoder(getattr(member, "module", member), mesh["data_parallel"])  # the EMA's AveragedModel holds one
    for member in networks_with(holder, "shard"):
        shard(member, mesh["data_parallel"])


def inference_weights(holder: nn.Module, fixed_posterior: bool) -> dict[str, torch.Tensor]:
    """The inference autoencoder's weights as complete CPU tensors, as diffusers should read them (a fixed
    posterior's log-variance pinned, see `with_deterministic_posterior`); under FSDP every process must call it."""
    model = holder.inference_autoencoder()
    weights = full_state_dict(model)
    return with_deterministic_posterior(weights, model.config.latent_channels) if fixed_posterior else weights
