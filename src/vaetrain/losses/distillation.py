"""Distilling a teacher autoencoder into a student (TAESD-style tiny autoencoders, whose training code was
never published; madebyollin/taesd README: "TAESD's encoder outputs match the teacher's scaled latents").

The student's encoder learns the latents the teacher's diffusion pipeline sees (the teacher's mean
through the formula its config asks for, `models.latent_space.pipeline_normalize`: (z - shift_factor) x
scaling_factor, or SDXL-style per channel with `latents_mean`/`latents_std`), by mean squared error; the
student's decoder reads those same teacher latents (detached) and is trained with the step's image terms
and GAN against the image (or the teacher's own decode of them). So an AutoencoderTiny student
(scaling_factor 1, shift 0) drops into a pipeline in the teacher's place.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from vaetrain.errors import ConfigError


@dataclass(frozen=True)
class DistillationConfig:
    """`vaetrain distill`'s teacher; no teacher: ordinary training."""

    teacher: str | None = None
    """A diffusers folder (any family, recognised by `_class_name`) or Hub id of the VAE to imitate."""
    subfolder: str | None = None
    """Subfolder of `teacher` holding the VAE (e.g. vae)."""
    encoder_weight: float = 1.0
    """Weight of the encoder's mean squared error to the teacher's scaled latents (0: decoder only)."""
    decoder_target: Literal["image", "teacher"] = "image"
    """What the student's decode of the teacher latents is compared with: the image itself, or the teacher's
    decode of the same latents (then the discriminator's real images are the teacher's decodes too)."""

    def __post_init__(self) -> None:
        if self.encoder_weight < 0:
            raise ConfigError(f"model.loss.distillation.encoder_weight must be >= 0, got {self.encoder_weight}")


def encoder_distillation_loss(student_latents: torch.Tensor, teacher_latents: torch.Tensor) -> torch.Tensor:
    """Mean squared error over every latent element, in fp32; the teacher's side carries no gradient."""
    return F.mse_loss(student_latents.float(), teacher_latents.detach().float())


def distilled_from(settings: dict) -> str | None:
    """The teacher a run's recorded settings (`RunRecord.settings`) distilled, or None. Its student's latents
    are the teacher's normalised latents by construction, so an export keeps the student's latent
    normalisation (scaling_factor 1, shift 0) instead of measuring one, and its model card says so
    (`latent_note`)."""
    return ((settings.get("loss") or {}).get("distillation") or {}).get("teacher") or None


def latent_note(settings: dict, scaling_factor: float | None) -> str | None:
    """The model card's latent-normalisation line of a distilled student; None when not distilled."""
    teacher = distilled_from(settings)
    if teacher is None:
        return None
    return f"scaling_factor {scaling_factor}: distilled from `{teacher}`, its latents are the latents the teacher's pipeline feeds its diffusion model"
