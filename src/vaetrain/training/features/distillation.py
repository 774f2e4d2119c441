"""Distillation as a unit (`model.loss.distillation`, `vaetrain distill`; `losses.distillation` has the
formulas): the frozen teacher's latents as its pipeline feeds its diffusion model
(`models.latent_space.pipeline_normalize`) are the student decoder's input and the student encoder's
target. The teacher is a network of the holder, so it moves with it between devices; it is frozen, in eval
mode, and never checkpointed."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn

from vaetrain.errors import ConfigError
from vaetrain.losses.distillation import encoder_distillation_loss
from vaetrain.models.autoencoder import load_pretrained_autoencoder
from vaetrain.models.families import family_of
from vaetrain.models.latent_space import pipeline_normalize
from vaetrain.training.features.base import Encoded, Feature, Run, Setup, network


class Distillation(Feature):
    name = "distillation"
    setting = "model.loss.distillation"
    needs_continuous_latents = True
    replaces_encoder = True
    networks = (network("teacher", "frozen shard_blocks channels_last", "the VAE being distilled"),)

    @classmethod
    def wanted(cls, setup: Setup, autoencoder: nn.Module) -> bool:
        return setup.injected.get("teacher") is not None or bool(setup.loss.distillation.teacher)

    def build(self, holder, autoencoder) -> None:
        super().build(holder, autoencoder)
        config = self.setup.loss.distillation
        teacher = self.setup.injected.get("teacher") or load_pretrained_autoencoder(config.teacher, config.subfolder)
        holder.teacher = freeze_teacher(teacher)
        check_student(autoencoder, holder.teacher)
        self.family = family_of(holder.teacher)

    def conflicts(self, run: Run) -> Iterator[str]:
        if run.family.video:
            yield "video families: model.loss.distillation is image-only"

    def encode(self, forward, images: torch.Tensor) -> Encoded:
        """The teacher's latents (with the student encoder's weighted squared error to them while it trains),
        compared with the image or with the teacher's decode of them."""
        teacher, config = self.holder.teacher, self.setup.loss.distillation
        latents, raw = self.latents(teacher, images)
        target = images if config.decoder_target == "image" else self.images(teacher, raw).to(images.dtype)
        extra, logs = [], {}
        if config.encoder_weight > 0 and torch.is_grad_enabled() and forward.encoder_trains():
            encoder_loss = encoder_distillation_loss(forward.family.encode(forward.networks.autoencoder, images).mean, latents)
            extra, logs = [config.encoder_weight * encoder_loss], {"train/distill_encoder": encoder_loss.detach()}
        return Encoded(latents, None, latents, target, extra, logs)

    @torch.no_grad()
    def latents(self, teacher: nn.Module, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(the teacher's normalised latents, its raw posterior mean), fp32, without a graph."""
        mean = self.family.encode(teacher, images).mean.float()
        return pipeline_normalize(teacher.config, mean), mean

    @torch.no_grad()
    def images(self, teacher: nn.Module, raw_latents: torch.Tensor) -> torch.Tensor:
        """The teacher's decode of its own latents, clamped to the image range."""
        return self.family.decode(teacher, raw_latents.to(next(teacher.parameters()).dtype)).float().clamp(-1, 1)


def freeze_teacher(teacher: nn.Module) -> nn.Module:
    teacher.requires_grad_(False)
    return teacher.eval()


def check_student(student: nn.Module, teacher: nn.Module) -> None:
    """The student must read the teacher's images and read and write its latents: same image and latent
    channels, same downsampling factor."""
    student_family, teacher_family = family_of(student), family_of(teacher)
    pairs = (
        ("in_channels", student.config.in_channels, teacher.config.in_channels),
        ("latent_channels", student_family.latent_channels(student), teacher_family.latent_channels(teacher)),
        ("downsampling factor", student_family.downsampling_factor(student), teacher_family.downsampling_factor(teacher)),
    )
    for name, mine, theirs in pairs:
        if mine != theirs:
            raise ConfigError(f"model.loss.distillation.teacher has {name} {theirs}, the student (model.autoencoder) {mine}; they must match")
