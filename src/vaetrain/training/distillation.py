"""The step's distillation part (see `losses.distillation`): the latents the teacher's pipeline feeds its
diffusion model (`models.latent_space.pipeline_normalize` of the teacher's config: the student decoder's
input and the student encoder's target) and, when asked, its decode of them (the
student decoder's target). The teacher is a network of the module, so it moves with it between devices;
it is frozen, in eval mode, and never checkpointed."""

from __future__ import annotations

import torch
from torch import nn

from vaetrain.errors import ConfigError
from vaetrain.models.families import family_of
from vaetrain.models.latent_space import pipeline_normalize


def freeze_teacher(teacher: nn.Module) -> nn.Module:
    teacher.requires_grad_(False)
    return teacher.eval()


def check_student(student: nn.Module, teacher: nn.Module) -> None:
    """The student must read the teacher's images and read and write its latents: same image and latent
    channels, same downsampling factor."""
    student_family, teacher_family = family_of(student), family_of(teacher)
    pairs = (("in_channels", student.config.in_channels, teacher.config.in_channels),
             ("latent_channels", student.config.latent_channels, teacher.config.latent_channels),
             ("downsampling factor", student_family.downsampling_factor(student), teacher_family.downsampling_factor(teacher)))
    for name, mine, theirs in pairs:
        if mine != theirs:
            raise ConfigError(f"model.loss.distillation.teacher has {name} {theirs}, the student (model.autoencoder) {mine}; they must match")


class TeacherTargets:
    def __init__(self, teacher: nn.Module) -> None:
        self.family = family_of(teacher)

    @torch.no_grad()
    def latents(self, teacher: nn.Module, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(the teacher's normalised latents, its raw posterior mean), fp32, without a graph."""
        mean = self.family.encode(teacher, images).mean.float()
        return pipeline_normalize(teacher.config, mean), mean

    @torch.no_grad()
    def images(self, teacher: nn.Module, raw_latents: torch.Tensor) -> torch.Tensor:
        """The teacher's decode of its own latents, clamped to the image range."""
        return self.family.decode(teacher, raw_latents.to(next(teacher.parameters()).dtype)).float().clamp(-1, 1)
