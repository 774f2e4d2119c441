"""The autoencoder's forward inside the GAN step: encode, posterior sample, the terms on the latent that the
step adds, and decode, or, distilling, the teacher's latents decoded by the student.

The latent terms: VA-VAE's alignment with its adaptive weight (`AlignmentTerm`), latent noise
(`noisy_latents`) and EQ-VAE's per-batch draw (`draw_equivariance`). Distillation (`losses.distillation`):
the frozen teacher's latents as its pipeline feeds its diffusion model (`models.latent_space.
pipeline_normalize`) are the student decoder's input and the student encoder's target (`TeacherTargets`);
the teacher is a network of the module, so it moves with it between devices; it is frozen, in eval mode,
and never checkpointed.

VA-VAE's adaptive weight ||grad of the image terms|| / (||grad of the alignment term|| + 1e-4) at the
encoder's last layer, clamped to [0, 1e8] (hustvl/LightningDiT, vavae/ldm/modules/losses/contperceptual.py,
`calculate_adaptive_weight_vf`), needs the image terms' gradient at the latent, which only the step's one
backward pass produces: a hook on the decoder's input records it. That backward carries the loss divided by
the accumulation count and, under fp16, multiplied by the loss scaler's scale; `observe` undoes both, and
the two gradients are summed over the accumulated batch's micro-batches, so the weight is the one computed
on the global batch's unscaled losses whatever the memory plan and precision. The weight is set after a
finite update (`settle`) and applies from the next update on (the first update trains without the term).
Deviations: the reference computes it in the same step by a second autograd pass through the decoder,
which DDP and FSDP do not allow mid-step; the image terms' gradient here also carries the adversarial
term's.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from vaetrain.errors import ConfigError
from vaetrain.losses.alignment import AlignmentConfig, alignment_loss
from vaetrain.losses.config import LossConfig
from vaetrain.losses.distillation import encoder_distillation_loss
from vaetrain.losses.equivariance import EquivarianceConfig, LatentTransform, draw_low_resolution, draw_transform
from vaetrain.losses.objective import Processes
from vaetrain.losses.terms import fsq_bound_penalty, vq_loss
from vaetrain.models.families import downsampling_factor, family_of
from vaetrain.models.last_layers import EncoderLastLayer
from vaetrain.models.latent_space import pipeline_normalize
from vaetrain.models.quantizer import ALIVE_USE, lookup


@dataclass
class Reconstruction:
    """One forward: the images the reconstruction is compared with (transformed like the latent under
    EQ-VAE), the reconstruction, the posterior, and what the latent terms add."""

    target: torch.Tensor
    images: torch.Tensor
    mean: torch.Tensor
    logvar: torch.Tensor | None
    extra_loss: torch.Tensor | None = None
    logs: dict = field(default_factory=dict)


class AutoencoderForward:
    """`forward(images, transform)` -> `Reconstruction`, for the step's generator and discriminator halves."""

    def __init__(self, networks, loss: LossConfig, settings) -> None:
        self.networks = networks
        self.loss = loss
        self.settings = settings
        self.family = family_of(networks.autoencoder)
        self.factor = downsampling_factor(networks.autoencoder)
        teacher = getattr(networks, "teacher", None)
        self.teacher = TeacherTargets(teacher) if teacher is not None else None
        alignment = loss.alignment
        self.alignment = AlignmentTerm(alignment, EncoderLastLayer(networks.autoencoder)) if alignment.weight > 0 else None

    def __call__(self, images: torch.Tensor, transform: LatentTransform | None = None) -> Reconstruction:
        """Encode (without a graph when the encoder is frozen), clamp the mean if asked, sample or take the mean
        (the fixed posterior is vqgan-training's `DiagonalGaussian`, ae.py: z = mu * (1 + std * eps)), add
        the alignment term while gradients are on, add latent noise, transform (EQ-VAE) and decode."""
        autoencoder, settings = self.networks.autoencoder, self.settings
        if self.teacher is not None:
            return self._distill(images)
        with torch.set_grad_enabled(torch.is_grad_enabled() and self._encoder_trains()):
            posterior = self.family.encode(autoencoder, images)
        mean = posterior.mean.float()
        if settings.latent_clamp is not None:
            mean = mean.clamp(-settings.latent_clamp, settings.latent_clamp)
        noise = torch.randn_like(mean) if self.loss.sample_posterior else None
        if posterior.logvar is None:  # a deterministic family
            logvar, latents = None, mean
        elif settings.posterior == "fixed":
            logvar, latents = None, mean if noise is None else mean * (1 + settings.posterior_std * noise)
        else:
            logvar = posterior.logvar.float()
            latents = mean if noise is None else mean + torch.exp(0.5 * logvar) * noise
        extra, logs = None, {}
        if self.alignment is not None and torch.is_grad_enabled():
            networks = self.networks
            extra, latents, logs = self.alignment.weighted_loss(images, latents, networks.alignment_encoder, networks.alignment_projection)
        latents = noisy_latents(latents, self.loss.latent_noise)
        target = images
        if transform is not None:
            latents, target = transform.latents(latents), transform.images(images, self.factor)
        if self.networks.codebook is not None:  # the vq family: quantised as the export quantises, + the codebook terms
            decoded, codebook_loss, codebook_logs = self._quantize_and_decode(latents)
            return Reconstruction(target, decoded, mean, logvar, codebook_loss, logs | codebook_logs)
        return Reconstruction(target, self.family.decode(autoencoder, latents), mean, logvar, extra, logs)

    def _quantize_and_decode(self, latents: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, dict]:
        """`models.quantizer.lookup` (diffusers' own lookup), the codebook's observation of this micro-batch
        (committed after a finite update), the codebook terms (`losses.terms.vq_loss`; FSQ: the bound
        penalty) x `codebook_weight`, and decoding of the quantised latents."""
        codebook, autoencoder = self.networks.codebook, self.networks.autoencoder
        config = codebook.config
        quantized = lookup(self.family.codebook(autoencoder), latents, config.levels if config.kind == "fsq" else None)
        if torch.is_grad_enabled():
            codebook.observe(quantized.inputs.detach(), quantized.indices, len(latents))
        if config.kind == "fsq":
            loss = config.fsq_bound_weight * fsq_bound_penalty(quantized.inputs)
        else:
            loss = vq_loss(quantized.inputs, quantized.codes, config.beta, legacy=config.legacy_loss, codebook_trained=config.ema_decay is None)
        share = torch.bincount(quantized.indices, minlength=config.size).float() / len(quantized.indices)
        perplexity = torch.exp(-(share * torch.log(share.clamp_min(1e-12))).sum())
        logs = {
            "train/codebook_loss": loss.detach(),
            "train/codebook_used": (share > 0).float().mean(),
            "train/codebook_perplexity": perplexity,
            "train/codebook_alive": (codebook.usage > ALIVE_USE).float().mean(),
        }
        return self.family.decode_quantized(autoencoder, quantized.latents), self.loss.codebook_weight * loss, logs

    def _distill(self, images: torch.Tensor) -> Reconstruction:
        """`losses.distillation`: the student decodes the teacher's scaled latents (with latent noise if
        asked); its encoder, while it trains, adds the weighted squared error to them."""
        teacher, student, config = self.networks.teacher, self.networks.autoencoder, self.loss.distillation
        latents, raw = self.teacher.latents(teacher, images)
        target = images if config.decoder_target == "image" else self.teacher.images(teacher, raw).to(images.dtype)
        extra, logs = None, {}
        if config.encoder_weight > 0 and torch.is_grad_enabled() and self._encoder_trains():
            encoder_loss = encoder_distillation_loss(self.family.encode(student, images).mean, latents)
            extra, logs = config.encoder_weight * encoder_loss, {"train/distill_encoder": encoder_loss.detach()}
        decoded = self.family.decode(student, noisy_latents(latents, self.loss.latent_noise))
        return Reconstruction(target, decoded, latents, None, extra, logs)

    def _encoder_trains(self) -> bool:
        return any(p.requires_grad for m in self.family.encoder_modules(self.networks.autoencoder) for p in m.parameters())


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


class AlignmentTerm:
    """Per micro-batch: `weighted_loss` before the backward, `observe` after it; per accumulated batch:
    `settle` after a finite update, or `discard` after a skipped one."""

    def __init__(self, config: AlignmentConfig, last_layer: EncoderLastLayer) -> None:
        self.config = config
        self.last_layer = last_layer
        self._gradients: dict[str, torch.Tensor] = {}  # this micro-batch's, at the encoder's last layer
        self._window: dict[str, torch.Tensor] = {}  # summed over the accumulated batch, unscaled

    def weighted_loss(self, images: torch.Tensor, latents: torch.Tensor, encoder, head) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """(weight x loss to add to the backward target, the latent the decoder should read, logs). The decoder
        must decode (a function of) the returned latent, and `observe` follow the backward pass."""
        features = encoder(images)
        loss = alignment_loss(head(latents), features, self.config)
        if self.config.adaptive:
            leaf = latents.detach().requires_grad_(True)
            (gradient,) = torch.autograd.grad(alignment_loss(head(leaf), features, self.config), leaf)
            self._gradients["alignment"] = self.last_layer.weight_gradient(gradient)
            weight = self.config.weight * torch.nan_to_num(head.ratio, nan=0.0)
        else:
            weight = torch.tensor(self.config.weight, device=latents.device)
        decoder_input = latents.view_as(latents)
        if self.config.adaptive and decoder_input.requires_grad:
            decoder_input.register_hook(self._record_image_gradient)
        return weight * loss, decoder_input, {"train/alignment": loss.detach(), "train/alignment_weight": weight.detach()}

    def _record_image_gradient(self, gradient: torch.Tensor) -> None:
        self._gradients["image"] = self.last_layer.weight_gradient(gradient)

    def observe(self, loss_scale: float, accumulate: int) -> None:
        """After a micro-batch's backward of `loss_scale` x (loss / `accumulate`): adds its share of the global
        batch's unscaled gradients (each micro-batch's loss is a mean over its images, the global batch's the
        mean of the `accumulate` micro-batch means)."""
        image, alignment = self._gradients.pop("image", None), self._gradients.pop("alignment", None)
        if image is None or alignment is None:
            return
        shares = {"image": image / loss_scale, "alignment": alignment / accumulate}
        self._window = {k: v + self._window[k] if k in self._window else v for k, v in shares.items()}

    def settle(self, head, processes: Processes | None) -> None:
        """After a finite update: the accumulated batch's two gradients become the ratio in `head.ratio`
        (averaged over processes first; every process calls this at the same point)."""
        window, self._window = self._window, {}
        if not window:
            return
        image, alignment = window["image"], window["alignment"]
        if processes is not None:
            image, alignment = processes.mean(image), processes.mean(alignment)
        ratio = torch.linalg.vector_norm(image) / (torch.linalg.vector_norm(alignment) + 1e-4)
        if bool(torch.isfinite(ratio)):
            head.ratio.copy_(ratio.clamp(0.0, 1e8).detach())

    def discard(self) -> None:
        """After a skipped update: the accumulated batch's gradients are forgotten, the weight kept."""
        self._window = {}


def noisy_latents(latents: torch.Tensor, max_sigma: float) -> torch.Tensor:
    """What the decoder reads under `loss.latent_noise`: z + sigma x std(z) x eps, sigma ~ U(0, max_sigma)
    per image and std(z) the batch's (detached), so the noise is relative to the latent's own scale (the
    units a diffusion model's output errors are in once latents are normalised)."""
    if max_sigma <= 0:
        return latents
    sigma = torch.rand(latents.shape[0], *(1,) * (latents.ndim - 1), device=latents.device) * max_sigma
    return latents + sigma * latents.detach().std() * torch.randn_like(latents)


def draw_equivariance(config: EquivarianceConfig, images: torch.Tensor, factor: int) -> tuple[LatentTransform | None, torch.Tensor]:
    """EQ-VAE's draw for one micro-batch: a latent transform, or else perhaps the batch downscaled."""
    if config.probability == 0:
        return None, images
    transform = draw_transform(config, (images.shape[-2] // factor, images.shape[-1] // factor), factor)
    if transform is None:
        size = draw_low_resolution(config, images.shape[-2:], factor)
        if size is not None:
            images = F.interpolate(images.float(), size=size, mode="bilinear", align_corners=False).to(images.dtype)
    return transform, images
