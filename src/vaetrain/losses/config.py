"""The objective's settings: every term's weight and how the terms are balanced (`LossConfig`, the
`model.loss.*` block). The objective itself is `losses.objective`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from vaetrain.errors import ConfigError
from vaetrain.losses.alignment import AlignmentConfig
from vaetrain.losses.denoising_decoder import DenoisingDecoderConfig
from vaetrain.losses.distillation import DistillationConfig
from vaetrain.losses.end_to_end import EndToEndConfig
from vaetrain.losses.equivariance import EquivarianceConfig
from vaetrain.losses.gan import GanLossKind
from vaetrain.losses.perceptual import Backbone, PerceptualNetwork, TripletSetting
from vaetrain.losses.terms import PixelLoss, ReconstructionKind, Reduction


@dataclass(frozen=True)
class PooledReconstruction:
    """vqgan-training's low-pass reconstruction term (see `terms.pooled_reconstruction_loss`)."""

    weight: float = 0.0
    """Weight of the pooled term; 0 switches it off (vqgan-training v0.2: 0.5)."""
    factor: int = 4
    """Area-downsampling factor of input and reconstruction before comparing them (v0.2: 4; HEAD: 16)."""
    kind: PixelLoss = "l1"
    """l1 (the reference) or l2 (squared error)."""
    mask: bool = False
    """Compare flat regions only: multiply by the reference's flat-region mask of the pooled input."""


@dataclass(frozen=True)
class LossConfig:
    """Every term's weight and how the terms are balanced. Step settings count generator optimizer steps."""

    reconstruction: ReconstructionKind = "l1"
    """Pixel loss: l1, l2 (squared error) or ms_ssim_l1 (Zhao et al. 2017's 0.84 (1 - MS-SSIM) + 0.16
    Gaussian-weighted L1: weight-free, any channel count; `losses/structural.py`)."""
    reduction: Reduction = "mean"
    """mean: averages (weights independent of size); sum: LDM's per-image sums (LDM's kl_weight 1e-6 means the
    same), per clip on clips (every term summed over the clip's frames too; `losses/terms.py`)."""
    reconstruction_weight: float = 1.0
    """Weight of the pixel loss (under gradnorm: the norm its gradient is scaled to; vqgan-training: 0.001)."""
    perceptual_weight: float = 1.0
    """Weight of LPIPS; 0 switches it off (and saves its forward and backward)."""
    perceptual_network: PerceptualNetwork = "vgg"
    """LPIPS backbone: vgg (LDM), alex or squeeze."""
    perceptual_backbone: Backbone = "pretrained"
    """pretrained: ImageNet weights (needs the file); random: untrained, for offline runs and tests."""
    perceptual_channels: TripletSetting = None
    """Images that are not RGB: the channel triplets LPIPS compares, averaged (e.g. [[0, 1, 2], [3, 4, 5]]),
    or `each` (every channel replicated to RGB); null: RGB as it is, 1 channel replicated."""
    pooled_reconstruction: PooledReconstruction = field(default_factory=PooledReconstruction)
    """The low-pass (pooled, optionally flat-region-masked) reconstruction term."""
    focal_frequency_weight: float = 0.0
    """Weight of the focal frequency loss (Jiang et al. 2021: spectrum distance weighted towards the
    frequencies reconstructed worst; weight-free, any channel count); 0 switches it off."""
    focal_frequency_alpha: float = 1.0
    """Its spectrum weight matrix's exponent (the reference's alpha, default 1)."""
    codebook_weight: float = 1.0
    """vq family: weight of the codebook and commitment terms (taming's codebook_weight: 1.0)."""
    kl_weight: float = 1e-6
    """Weight of the KL term, or of mean(mu^2) with a fixed-variance posterior (vqgan-training: 0.1)."""
    sample_posterior: bool = True
    """Decode a posterior sample (or, fixed posterior, mu with multiplicative noise); false: the mean."""
    gan_loss: GanLossKind = "hinge"
    """hinge (LDM); vanilla or non_saturating (BCE); thresholded_hinge (generator: relu(D(x) - D(x̂) - gan_margin), discriminator: BCE)."""
    gan_margin: float = 0.1
    """Margin of thresholded_hinge."""
    disc_weight: float = 0.5
    """Weight of the adversarial term (adaptive: times the adaptive weight; gradnorm: its gradient's norm)."""
    disc_start_step: int = 50001
    """Generator step at which the discriminator starts training."""
    disc_warmup_steps: int = 0
    """The discriminator trains alone this many steps from disc_start_step, then the adversarial weight ramps
    linearly from 0 to 1 over as many steps (0: the whole term at disc_start_step, LDM's step change)."""
    balance: Literal["adaptive", "fixed", "gradnorm"] = "adaptive"
    """adaptive: LDM's adaptive GAN weight; fixed: disc_weight as it is; gradnorm: every term's gradient
    w.r.t. the reconstruction scaled to its weight (vqgan-training)."""
    adaptive_weight_max: float = 1e4
    """Upper clamp of the adaptive weight (LDM: 1e4)."""
    lecam_weight: float = 0.0
    """Weight of LeCam regularisation of the discriminator; 0 switches it off (vqgan-training: 0.1)."""
    lecam_decay: float = 0.9
    """Decay of LeCam's anchors (moving averages of the mean real and fake logits)."""
    r1_weight: float = 0.0
    """R1 gradient penalty gamma on real images; 0 switches it off."""
    r1_every: int = 16
    """R1 is computed every this many discriminator steps and scaled by it (lazy regularisation)."""
    equivariance: EquivarianceConfig = field(default_factory=EquivarianceConfig)
    """EQ-VAE: decode downscaled and rotated latents, compared with the images transformed alike."""
    alignment: AlignmentConfig = field(default_factory=AlignmentConfig)
    """VA-VAE: align the (projected) latent with a frozen vision encoder's patch features."""
    latent_noise: float = 0.0
    """The decoder reads z + sigma x std(z) x eps, sigma ~ U(0, latent_noise) per image (0: off)."""
    distillation: DistillationConfig = field(default_factory=DistillationConfig)
    """Imitate a teacher VAE (`vaetrain distill`): encoder to its scaled latents, decoder from them."""
    end_to_end: EndToEndConfig = field(default_factory=EndToEndConfig)
    """REPA-E: a diffusion transformer trained with the autoencoder, its alignment loss reaching the VAE."""
    denoising_decoder: DenoisingDecoderConfig = field(default_factory=DenoisingDecoderConfig)
    """ltx family, timestep-conditioned decoder: the noise level drawn in training and the decode timestep."""

    def __post_init__(self) -> None:
        pooled = self.pooled_reconstruction
        if pooled.factor < 1:
            raise ConfigError(f"model.loss.pooled_reconstruction.factor must be >= 1, got {pooled.factor}")
        if self.disc_warmup_steps < 0:
            raise ConfigError(f"model.loss.disc_warmup_steps must be >= 0, got {self.disc_warmup_steps}")
        if not 0.0 <= self.lecam_decay < 1.0:
            raise ConfigError(f"model.loss.lecam_decay must be in [0, 1), got {self.lecam_decay}")
        if self.latent_noise < 0:
            raise ConfigError(f"model.loss.latent_noise must be >= 0, got {self.latent_noise}")
        if self.r1_every < 1:
            raise ConfigError(f"model.loss.r1_every must be >= 1, got {self.r1_every}")
        for name in ("reconstruction_weight", "perceptual_weight", "kl_weight", "disc_weight", "lecam_weight", "r1_weight", "focal_frequency_weight"):
            if getattr(self, name) < 0:
                raise ConfigError(f"model.loss.{name} must be >= 0, got {getattr(self, name)}")
