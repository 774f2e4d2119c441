"""VA-VAE's vision-foundation-model alignment (Yao et al. 2025; hustvl/LightningDiT,
vavae/ldm/modules/losses/contperceptual.py, `LPIPSWithDiscriminator.forward`, the "vf loss"): a frozen
encoder's patch features f and the (1x1-projected) sampled latent z' on the same grid are pulled together
by a margin cosine term and a margin distance-matrix term, weighted adaptively against the reconstruction
gradient at the encoder's last layer (`calculate_adaptive_weight_vf`) times `weight`."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from vaetrain.errors import ConfigError


@dataclass(frozen=True)
class AlignmentConfig:
    """VA-VAE's alignment term; weight 0 switches it off."""

    weight: float = 0.0
    """The term's weight (VA-VAE: vf_weight 0.1, times the adaptive weight)."""
    encoder: str = "facebook/dinov2-small"
    """The frozen vision encoder: a transformers DINOv2 id or folder (VA-VAE: DINOv2 ViT-L), or random-small
    (an untrained convolutional encoder: offline plumbing only, not a meaningful target)."""
    cos_margin: float = 0.5
    """m1: cosine similarities above 1 - m1 are not pushed further (VA-VAE: 0.5)."""
    distmat_margin: float = 0.25
    """m2: distance-matrix differences below m2 are not penalised (VA-VAE: 0.25)."""
    cos_weight: float = 1.0
    """Weight of the cosine term inside the loss."""
    distmat_weight: float = 1.0
    """Weight of the distance-matrix term inside the loss."""
    adaptive: bool = True
    """Scale by ||grad of the image terms|| / ||grad of this term|| at the encoder's last layer (VA-VAE's adaptive_vf)."""

    def __post_init__(self) -> None:
        if self.weight < 0:
            raise ConfigError(f"model.loss.alignment.weight must be >= 0, got {self.weight}")


def alignment_loss(projected: torch.Tensor, features: torch.Tensor, config: AlignmentConfig) -> torch.Tensor:
    """distmat_weight * mean(relu(|cos(z'_i, z'_j) - cos(f_i, f_j)| - m2)) + cos_weight * mean(relu(1 - m1 -
    cos(z'_ij, f_ij))), i and j positions of one image; f is resized (bilinear) to z's grid when they
    differ, the reference's grids being equal (16x16 for f16 at 256 px and DINOv2 at 224 px)."""
    features = features.float()
    if features.shape[-2:] != projected.shape[-2:]:
        features = F.interpolate(features, size=projected.shape[-2:], mode="bilinear", align_corners=False)
    z = F.normalize(projected.float().flatten(2), dim=1)
    f = F.normalize(features.flatten(2), dim=1)
    z_similarity = torch.einsum("bci,bcj->bij", z, z)
    f_similarity = torch.einsum("bci,bcj->bij", f, f)
    distance_matrix = F.relu((z_similarity - f_similarity).abs() - config.distmat_margin).mean()
    cosine = F.relu(1 - config.cos_margin - F.cosine_similarity(features, projected.float(), dim=1)).mean()
    return config.distmat_weight * distance_matrix + config.cos_weight * cosine


class AlignmentHead(nn.Module):
    """VA-VAE's `linear_proj` with reverse_proj (latent channels -> feature dimension, 1x1, no bias), and the
    adaptive weight measured in the latest update as a buffer (NaN: none yet), so checkpoints carry it."""

    def __init__(self, latent_channels: int, feature_dim: int) -> None:
        super().__init__()
        self.projection = nn.Conv2d(latent_channels, feature_dim, kernel_size=1, bias=False)
        self.register_buffer("ratio", torch.tensor(float("nan")))

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        return self.projection(latents)
