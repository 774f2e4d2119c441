"""The objective's terms as pure functions of tensors, each reduced by the objective's one rule.

`reduction` applies to every term at once, so `kl_weight` keeps one meaning:
- "mean": averaged over pixels (or latent elements). Weights do not depend on resolution or latent size.
- "sum": LDM's `LPIPSWithDiscriminator`: summed over each sample's elements, averaged over the batch.

A sample is an image or a whole clip: on clips (B, C, T, H, W) every term sums over the clip's frames as
well as its pixels (L1/L2, KL over the latent clip, and the terms computed frame by frame: MS-SSIM + L1,
the pooled term, the focal frequency term and LPIPS, each summed over the frames of a clip), so a clip
twice as long weighs every term twice, and the balance between terms does not depend on its length. The
focal frequency term's reference takes the mean of its map (`structural.focal_frequency_loss`); under "sum"
its map is summed like pixels (the orthonormal DFT has one frequency per pixel). The adversarial term stays
a mean over logits under both (LDM's; the adaptive weight makes it scale-free).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution
from torchvision.transforms.v2.functional import gaussian_blur

from vaetrain.frames import as_clips, as_frames, is_clip
from vaetrain.losses.structural import focal_frequency_map, ms_ssim_l1_map

Reduction = Literal["mean", "sum"]
PixelLoss = Literal["l1", "l2"]
ReconstructionKind = Literal["l1", "l2", "ms_ssim_l1"]

# vqgan-training's edge detector (vae_trainer.py, `blurriness_heatmap`): a ring of ones around -20
_EDGE_KERNEL = torch.tensor([[0, 1, 1, 1, 0], [1, 1, 1, 1, 1], [1, 1, -20, 1, 1], [1, 1, 1, 1, 1], [0, 1, 1, 1, 0]], dtype=torch.float32).view(1, 1, 5, 5)
FLAT_MASK_BLUR = 13  # Gaussian kernel size; its reflect padding needs images larger than 6 px


def reduce(per_element: torch.Tensor, reduction: Reduction) -> torch.Tensor:
    if reduction == "sum":
        return per_element.flatten(1).sum(dim=1).mean()
    return per_element.mean()


def reduce_frames(per_element: torch.Tensor, like: torch.Tensor, reduction: Reduction) -> torch.Tensor:
    """`reduce` of a map computed frame by frame ((B * T, ...) for clips `like` (B, C, T, H, W)): per clip."""
    return reduce(as_clips(per_element, like.shape[2]) if is_clip(like) else per_element, reduction)


def reconstruction_loss(target: torch.Tensor, reconstruction: torch.Tensor, kind: ReconstructionKind, reduction: Reduction) -> torch.Tensor:
    """L1, squared error or Zhao et al.'s MS-SSIM + L1 mix (on [0, 1] values; clips frame by frame), in fp32."""
    if kind == "ms_ssim_l1":
        return reduce_frames(ms_ssim_l1_map((as_frames(target) + 1) / 2, (as_frames(reconstruction) + 1) / 2), target, reduction)
    loss_fn = F.l1_loss if kind == "l1" else F.mse_loss
    return reduce(loss_fn(reconstruction.float(), target.float(), reduction="none"), reduction)


def kl_divergence(mean: torch.Tensor, logvar: torch.Tensor, reduction: Reduction) -> torch.Tensor:
    """KL(q(z|x) || N(0, I)) in fp32, using diffusers' posterior (which clamps logvar to [-30, 20])."""
    frames = mean.shape[2] if is_clip(mean) else 1  # diffusers sums over dims 1-3: clips go frame by frame
    posterior = DiagonalGaussianDistribution(torch.cat([as_frames(mean).float(), as_frames(logvar).float()], dim=1))
    per_frame_sum = posterior.kl()
    if reduction == "sum":
        return per_frame_sum.mean() * frames  # per image, or per clip
    return per_frame_sum.mean() / as_frames(mean)[0].numel()


def latent_penalty(mean: torch.Tensor) -> torch.Tensor:
    """mean(mu^2) over every latent element: the fixed-variance posterior's stand-in for the KL term
    (vqgan-training vae_trainer.py, `vae_loss_function`: `z.pow(2).mean()`)."""
    return mean.float().pow(2).mean()


def flat_region_mask(images: torch.Tensor) -> torch.Tensor:
    """vqgan-training's `blurriness_heatmap` (vae_trainer.py, identical at v0.2 521df37 and HEAD 379fe36):
    grayscale, |5x5 ring-of-ones / -20 filter| (zero padding 2), Gaussian blur 13x13 sigma 2 (reflect
    padding, as torchvision's GaussianBlur), min-max normalised over the whole batch, 1 - that, and values
    below 0.8 set to 0; repeated over the channels. 1 marks flat regions, 0 edges and texture."""
    gray = images.float().mean(dim=1, keepdim=True)
    edges = F.conv2d(gray, _EDGE_KERNEL.to(gray.device), padding=2).abs()
    edges = gaussian_blur(edges, [FLAT_MASK_BLUR, FLAT_MASK_BLUR], [2.0, 2.0])
    edges = (edges - edges.min()) / (edges.max() - edges.min() + 1e-8)
    flat = 1 - edges
    flat = torch.where(flat < 0.8, torch.zeros_like(flat), flat)
    return flat.repeat(1, images.shape[1], 1, 1)


def pooled_reconstruction_loss(
    target: torch.Tensor, reconstruction: torch.Tensor, *, factor: int, kind: PixelLoss, mask: bool, reduction: Reduction
) -> torch.Tensor:
    """Error between area-downsampled images (vqgan-training vae_trainer.py, `vae_loss_function`: v0.2
    521df37 pools by 4 and masks with `blurriness_heatmap` of the pooled input; HEAD pools by 16, unmasked).
    The reference takes the L1 of the masked difference; `kind` l2 squares it instead."""
    pooled_target = F.interpolate(as_frames(target).float(), scale_factor=1 / factor, mode="area")
    pooled_reconstruction = F.interpolate(as_frames(reconstruction).float(), scale_factor=1 / factor, mode="area")
    difference = pooled_reconstruction - pooled_target
    if mask:
        difference = difference * flat_region_mask(pooled_target)
    per_element = difference.abs() if kind == "l1" else difference.pow(2)
    return reduce_frames(per_element, target, reduction)


def focal_frequency_term(target: torch.Tensor, reconstruction: torch.Tensor, *, alpha: float, reduction: Reduction) -> torch.Tensor:
    """Jiang et al.'s focal frequency loss (`structural.focal_frequency_map`), frame by frame on clips."""
    return reduce_frames(focal_frequency_map(as_frames(target), as_frames(reconstruction), alpha), target, reduction)
