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

from vaetrain.losses.gan import LeCamAnchors
from vaetrain.losses.perceptual import build_perceptual_loss, channel_triplets, for_channels
from vaetrain.models.autoencoder import build_autoencoder, load_pretrained_autoencoder
from vaetrain.models.codebook import Codebook
from vaetrain.models.discriminator import build_discriminator
from vaetrain.models.ema import build_ema
from vaetrain.models.families import family_of
from vaetrain.models.feature_encoders import AlignmentHead, build_feature_encoder
from vaetrain.training.forward import check_student, freeze_teacher

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
    _network("codebook", "probe_restore", "the vq family's codebook statistics (EMA sums, use counts)"),
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


def build_networks(module: nn.Module, *, perceptual: nn.Module | None, alignment_encoder: nn.Module | None, teacher: nn.Module | None) -> None:
    """Sets every member of `NETWORKS` on the module from its config blocks (None where its term is off);
    injected networks (`perceptual`, `alignment_encoder`, `teacher`) replace the configured ones."""
    loss = module.loss_config
    module.autoencoder = autoencoder = build_autoencoder(module.autoencoder_config)
    channels, latent_channels = module.image_channels, family_of(autoencoder).latent_channels(autoencoder)
    module.discriminator = build_discriminator(module.discriminator_config, channels, latent_channels)
    module.lecam_anchors = LeCamAnchors() if loss.lecam_weight > 0 else None
    codebook = family_of(autoencoder).codebook(autoencoder)
    module.codebook = Codebook(module.autoencoder_config.quantizer, codebook.shape[1]) if codebook is not None else None
    if perceptual is None and loss.perceptual_weight > 0:
        channel_triplets(channels, loss.perceptual_channels)  # a missing setting fails before VGG loads
        perceptual = build_perceptual_loss(loss.perceptual_network, loss.perceptual_backbone)
    module.perceptual = for_channels(perceptual, channels, loss.perceptual_channels)
    module.ema = build_ema(autoencoder, module.ema_config.decay) if module.ema_config.enabled else None
    module.alignment_encoder = module.alignment_projection = None
    if loss.alignment.weight > 0:
        module.alignment_encoder = alignment_encoder or build_feature_encoder(loss.alignment.encoder)
        module.alignment_projection = AlignmentHead(latent_channels, module.alignment_encoder.feature_dim)
    module.teacher = None
    if teacher is not None or loss.distillation.teacher:
        module.teacher = freeze_teacher(teacher or load_pretrained_autoencoder(loss.distillation.teacher, loss.distillation.subfolder))
        check_student(autoencoder, module.teacher)
