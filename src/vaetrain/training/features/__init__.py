"""The training features, each one unit (`base.Feature`): its networks, refusals, contributions to the
forward and to each network's loss, and the buffers it commits after the update guard. `FEATURES` is the
one registry: the order in which the step calls them (alignment and end-to-end tuning before latent noise before EQ-VAE's
transform on the latent; LeCam before R1 on the discriminator) and builds their networks."""

from __future__ import annotations

from torch import nn

from vaetrain.errors import ConfigError
from vaetrain.models.families import family_of
from vaetrain.training.features.alignment import Alignment
from vaetrain.training.features.base import Feature, Run, Setup, Update
from vaetrain.training.features.codebook import CodebookFeature
from vaetrain.training.features.denoising_decoder import DenoisingDecoder
from vaetrain.training.features.distillation import Distillation
from vaetrain.training.features.end_to_end import EndToEnd
from vaetrain.training.features.equivariance import Equivariance
from vaetrain.training.features.gradnorm import GradientNormalisation
from vaetrain.training.features.latent_noise import LatentNoise
from vaetrain.training.features.lecam import LeCam
from vaetrain.training.features.pooled import PooledReconstruction
from vaetrain.training.features.r1 import R1

FEATURES: tuple[type[Feature], ...] = (
    Alignment,
    EndToEnd,
    LatentNoise,
    Equivariance,
    CodebookFeature,
    Distillation,
    DenoisingDecoder,
    PooledReconstruction,
    GradientNormalisation,
    LeCam,
    R1,
)


def build_features(holder: nn.Module, setup: Setup, autoencoder: nn.Module) -> list[Feature]:
    """The run's active units, their refusals checked (one loop, before anything heavy loads), each with its
    networks set on `holder` (every inactive unit's to None)."""
    active = [unit(setup) for unit in FEATURES if unit.wanted(setup, autoencoder)]
    family = family_of(autoencoder)
    check_features(active, Run(setup, family, family.image_channels(autoencoder)[0], frozenset(feature.name for feature in active)))
    for unit in FEATURES:
        for declared in unit.networks:
            setattr(holder, declared.name, None)
    for feature in active:
        feature.build(holder, autoencoder)
    return active


def check_features(features: list[Feature], run: Run) -> None:
    """Every active unit's refusals, the first one raised in one line."""
    replacing = next((feature for feature in features if feature.replaces_encoder), None)
    quantising = next((feature for feature in features if feature.quantises_latents), None)
    for feature in features:
        for message in feature.conflicts(run):
            raise ConfigError(message)
        if replacing is not None and feature.reads_encoder_latents:
            raise ConfigError(f"{feature.setting} does not apply beside {replacing.setting}: the decoder reads that unit's latents, not the encoder's")
        if quantising is not None and feature.needs_continuous_latents:
            raise ConfigError(f"{feature.setting} does not apply beside {quantising.setting}, which quantises its latents")


def check_sizes(features: list[Feature], sides: list[int], resolution) -> None:
    for feature in features:
        for message in feature.check_sizes(sides, resolution):
            raise ConfigError(message)


def refuse_accumulation(features: list[Feature], micro_batches: int) -> None:
    for feature in features:
        if (message := feature.refuse_accumulation(micro_batches)) is not None:
            raise ConfigError(message)


def no_accumulation_reason(features: list[Feature]) -> str | None:
    """The setting that forbids the memory planner to accumulate, if a unit does."""
    return next((feature.no_accumulation for feature in features if feature.no_accumulation), None)


__all__ = ["FEATURES", "Feature", "Run", "Setup", "Update", "build_features", "check_features", "check_sizes", "no_accumulation_reason", "refuse_accumulation"]
