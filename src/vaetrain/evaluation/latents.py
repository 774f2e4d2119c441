"""Latent statistics: the scale and shift a diffusion model needs to see unit-variance latents."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from vaetrain.losses.terms import kl_divergence
from vaetrain.models.families import encode

HISTOGRAM_BINS = 40
_HISTOGRAM_SAMPLES_PER_BATCH = 4096  # per channel: enough for a histogram, bounded memory for any set size


@dataclass
class LatentStatistics:
    """Mean and std over all latent elements and per channel, from posterior samples of `count` images.

    `kl` is KL(q(z|x) || N(0, I)) per latent element, averaged over images (the `reduction: mean`
    convention of the training loss; multiply by the latent size for LDM's per-image sum).
    `channel_histograms`: per channel, {"edges": [...], "counts": [...]} over a subsample of latents.
    """

    mean: float
    std: float
    channel_mean: list[float]
    channel_std: list[float]
    count: int
    kl: float = float("nan")
    channel_histograms: list[dict] = field(default_factory=list)

    @property
    def scaling_factor(self) -> float:
        """1 / std: diffusers' `scaling_factor` (0.18215 for SD 1.x)."""
        return 1.0 / self.std

    @property
    def shift_factor(self) -> float:
        return self.mean

    def as_dict(self) -> dict:
        return asdict(self) | {"scaling_factor": self.scaling_factor, "shift_factor": self.shift_factor}


class LatentAccumulator:
    """Running float64 sums of posterior samples (or modes), per channel, plus the KL and a subsample for
    histograms: feed it the posteriors of a pass over the data, read `result()` at the end."""

    def __init__(self, *, sample: bool = True, seed: int = 0) -> None:
        self.sample = sample
        self.seed = seed
        self.generator: torch.Generator | None = None
        self.total: torch.Tensor | None = None
        self.total_sq: torch.Tensor | None = None
        self.elements = self.images = 0
        self.kl_sum = 0.0
        self.kl_images = 0  # images with a posterior variance (none for deterministic families)
        self.subsamples: list[torch.Tensor] = []

    @torch.no_grad()
    def update(self, posterior) -> None:
        if self.generator is None:
            self.generator = torch.Generator(device=posterior.mean.device).manual_seed(self.seed)
        latents = (posterior.sample(generator=self.generator) if self.sample else posterior.mode()).double()
        dims = (0, *range(2, latents.ndim))  # all but the channels (clips: frames too)
        sums, sums_sq = latents.sum(dim=dims), latents.pow(2).sum(dim=dims)
        self.total = sums if self.total is None else self.total + sums
        self.total_sq = sums_sq if self.total_sq is None else self.total_sq + sums_sq
        self.elements += latents[:, 0].numel()
        self.images += latents.shape[0]
        if posterior.logvar is not None:  # deterministic families have no KL: it stays nan
            self.kl_sum += float(kl_divergence(posterior.mean, posterior.logvar, "mean")) * latents.shape[0]
            self.kl_images += latents.shape[0]
        per_channel = latents.transpose(0, 1).flatten(1)
        stride = max(1, per_channel.shape[1] // _HISTOGRAM_SAMPLES_PER_BATCH)
        self.subsamples.append(per_channel[:, ::stride].float().cpu())

    def result(self) -> LatentStatistics:
        if self.total is None:
            raise ValueError("no images to measure latent statistics on")
        total, total_sq, elements = self.total, self.total_sq, self.elements
        channel_mean = total / elements
        channel_var = (total_sq / elements - channel_mean.pow(2)).clamp_min(0)
        mean = total.sum() / (elements * len(total))
        var = (total_sq.sum() / (elements * len(total)) - mean.pow(2)).clamp_min(0)
        return LatentStatistics(
            mean=float(mean),
            std=float(var.sqrt()),
            channel_mean=channel_mean.tolist(),
            channel_std=channel_var.sqrt().tolist(),
            count=self.images,
            kl=self.kl_sum / self.kl_images if self.kl_images else float("nan"),
            channel_histograms=[_histogram(values) for values in torch.cat(self.subsamples, dim=1)],
        )


@torch.no_grad()
def measure_latent_statistics(model: nn.Module, batches: Iterable[torch.Tensor], *, sample: bool = True, seed: int = 0) -> LatentStatistics:
    """Encodes every batch (images in [-1, 1]) and accumulates its latents."""
    device = next(model.parameters()).device
    accumulator = LatentAccumulator(sample=sample, seed=seed)
    for batch in batches:
        accumulator.update(encode(model, batch.to(device)))
    return accumulator.result()


def _histogram(values: torch.Tensor) -> dict:
    low, high = float(values.min()), float(values.max())
    high = high if high > low else low + 1e-6
    counts = torch.histc(values, bins=HISTOGRAM_BINS, min=low, max=high)
    edges = torch.linspace(low, high, HISTOGRAM_BINS + 1)
    return {"edges": [round(e, 5) for e in edges.tolist()], "counts": [int(c) for c in counts.tolist()]}
