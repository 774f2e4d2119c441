"""Latent statistics: the scale and shift a diffusion model needs to see unit-variance latents."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass

import torch
from diffusers import AutoencoderKL


@dataclass
class LatentStatistics:
    """Mean and std over all latent elements and per channel, from posterior samples of `count` images."""

    mean: float
    std: float
    channel_mean: list[float]
    channel_std: list[float]
    count: int

    @property
    def scaling_factor(self) -> float:
        """1 / std: diffusers' `scaling_factor` (0.18215 for SD 1.x)."""
        return 1.0 / self.std

    @property
    def shift_factor(self) -> float:
        return self.mean

    def as_dict(self) -> dict:
        return asdict(self) | {"scaling_factor": self.scaling_factor, "shift_factor": self.shift_factor}


@torch.no_grad()
def measure_latent_statistics(
    model: AutoencoderKL, batches: Iterable[torch.Tensor], *, sample: bool = True, seed: int = 0
) -> LatentStatistics:
    """Accumulates per-channel sums in float64 over every batch (images in [-1, 1])."""
    device = next(model.parameters()).device
    generator = torch.Generator(device=device).manual_seed(seed)
    total = total_sq = None
    elements = images = 0
    for batch in batches:
        posterior = model.encode(batch.to(device)).latent_dist
        latents = (posterior.sample(generator=generator) if sample else posterior.mode()).double()
        sums, sums_sq = latents.sum(dim=(0, 2, 3)), latents.pow(2).sum(dim=(0, 2, 3))
        total = sums if total is None else total + sums
        total_sq = sums_sq if total_sq is None else total_sq + sums_sq
        elements += latents.shape[0] * latents.shape[2] * latents.shape[3]
        images += latents.shape[0]
    if total is None:
        raise ValueError("no images to measure latent statistics on")
    channel_mean = total / elements
    channel_var = (total_sq / elements - channel_mean.pow(2)).clamp_min(0)
    mean = total.sum() / (elements * len(total))
    var = (total_sq.sum() / (elements * len(total)) - mean.pow(2)).clamp_min(0)
    return LatentStatistics(
        mean=float(mean),
        std=float(var.sqrt()),
        channel_mean=channel_mean.tolist(),
        channel_std=channel_var.sqrt().tolist(),
        count=images,
    )
