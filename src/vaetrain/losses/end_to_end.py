"""REPA-E's end-to-end tuning (Leng et al. 2025; End2End-Diffusion/REPA-E, `train_repae.py`, `main`): the
settings, and the REPA projection loss as a pure function.

Per micro-batch the reference computes, with z the VAE's posterior sample and f a frozen DINOv2's patch
tokens of the image:
- the VAE's loss: its own L1 + LPIPS + KL + GAN terms (`loss/losses.py`, `ReconstructionLoss_Single_Stage.
  _forward_generator`; `configs/l1_lpips_kl_gan.yaml`) + `vae_align_proj_coeff` (1.5) x the projection loss
  of the SiT's tokens on z, the SiT frozen (`requires_grad(model, False)`) and in eval mode (its BatchNorm
  reads its running statistics), stopped after block `encoder_depth` (`align_only`);
- the SiT's loss: the denoising loss on z.detach() (`"Avoid diffusion loss to backpropagate to the VAE"`)
  + `proj_coeff` (0.5) x the projection loss, with the same t and noise as the VAE's pass.
The projection loss (`models/sit.py`, `SiT.forward`, `proj_loss`): -mean over images and tokens of the
cosine similarity of the projected token and the encoder's token.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from vaetrain.errors import ConfigError


@dataclass(frozen=True)
class EndToEndConfig:
    """REPA-E: a diffusion transformer (SiT) trained with the autoencoder; `enabled` switches it on. Defaults
    are train_repae.py's `parse_args` unless said."""

    enabled: bool = False
    """Train a SiT on the latents in the same step, and align its tokens to `encoder`'s into the VAE too."""
    encoder: str = "facebook/dinov2-base"
    """The frozen representation encoder (`--enc-type dinov2-vit-b`), loaded as VA-VAE's alignment loads
    it (a transformers DINOv2 id or folder), or random-small (offline plumbing: its features mean nothing)."""
    size: str | tuple[int, int, int] = "xl"
    """The SiT's size: a name of `models.diffusion_transformer.SIZES` (`--model SiT-XL/2`: xl)."""
    patch_size: int = 2
    """SiT-XL/2's patch size 2; CPU-sized runs on small latents use 1."""
    encoder_depth: int = 8
    """The block whose tokens are projected and aligned (`--encoder-depth` 8)."""
    projector_dim: int = 2048
    """The projector's hidden width (`SiT.__init__` projector_dim 2048)."""
    alignment_weight: float = 0.5
    """The projection loss's weight in the SiT's loss (`--proj-coeff` 0.5)."""
    vae_alignment_weight: float = 1.5
    """The projection loss's weight in the VAE's loss (`--vae-align-proj-coeff` 1.5)."""
    batch_norm_momentum: float = 0.1
    """The latent BatchNorm's momentum (`--bn-momentum` 0.1); eps is SiT's 1e-4."""
    ema_decay: float = 0.9999
    """The SiT's EMA (`update_ema` decay 0.9999, buffers averaged too)."""
    lr: float = 1e-4
    """The SiT's own AdamW (`--learning-rate` 1e-4, constant; the VAE and discriminator keep `model.optimizer.*`)."""
    betas: tuple[float, float] = (0.9, 0.999)
    """Its betas (`--adam-beta1` 0.9, `--adam-beta2` 0.999); weight decay 0, eps 1e-8 as the reference's."""
    gradient_clip_norm: float | None = 1.0
    """Its gradient clipping (`--max-grad-norm` 1.0, applied to each of the three networks)."""

    def __post_init__(self) -> None:
        if self.alignment_weight < 0 or self.vae_alignment_weight < 0:
            raise ConfigError("model.loss.end_to_end: alignment_weight and vae_alignment_weight must be >= 0")
        if not 0 < self.batch_norm_momentum <= 1:
            raise ConfigError(f"model.loss.end_to_end.batch_norm_momentum must be in (0, 1], got {self.batch_norm_momentum}")
        if not 0 <= self.ema_decay < 1:
            raise ConfigError(f"model.loss.end_to_end.ema_decay must be in [0, 1), got {self.ema_decay}")
        if self.patch_size < 1:
            raise ConfigError(f"model.loss.end_to_end.patch_size must be >= 1, got {self.patch_size}")


def projection_loss(projected: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
    """-mean over images and tokens of cos(projected token, encoder token): `projected` (batch, tokens,
    dim), `features` (batch, dim, h, w) as the encoder loaders give them, resized (bilinear) to the token
    grid when the grids differ (the reference's are equal: 16 x 16 for SiT-XL/2 on f8 latents at 256 px
    and DINOv2 at 224 px)."""
    side = int(round(projected.shape[1] ** 0.5))
    features = features.float()
    if features.shape[-2:] != (side, side):
        features = F.interpolate(features, size=(side, side), mode="bilinear", align_corners=False)
    tokens = features.flatten(2).transpose(1, 2)
    return -F.cosine_similarity(F.normalize(projected.float(), dim=-1), F.normalize(tokens, dim=-1), dim=-1).mean()


def denoising_loss(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """`mean_flat((x - model_target) ** 2)`, averaged over the batch (`sit_outputs["denoising_loss"].mean()`)."""
    return F.mse_loss(prediction.float(), target.float())
