"""How a discrete autoencoder uses its codes over a set of images, as validation, `vaetrain eval` and the
report show it (the family's `token_usage`)."""

from __future__ import annotations

import math

import torch
from torchmetrics import Metric

USAGE_KEYS = ("codebook_usage", "codebook_perplexity", "dead_codes", "bits_per_image")
"""What `TokenUsage.compute` returns (None for a continuous autoencoder)."""
USAGE_COLUMNS = (("codebook_usage", "codes used", 3), ("codebook_perplexity", "code perplexity", 1), ("bits_per_image", "bits / image", 0))
"""The report's columns of them: (key, title, digits)."""


class TokenUsage(Metric):
    """How a discrete autoencoder uses its codebook over a set of images (summed across processes): the
    fraction of codes used, the perplexity exp(H) of the code distribution, the dead (unused) codes, and
    bits per image (tokens per image x log2(codes): the raw code length)."""

    full_state_update = False

    def __init__(self, codes: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.codes = codes
        self.add_state("counts", default=torch.zeros(codes, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("images", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, indices: torch.Tensor) -> None:
        """`indices`: (images, tokens) code indices."""
        self.counts += torch.bincount(indices.reshape(-1), minlength=self.codes).double()
        self.images += len(indices)

    def compute(self) -> dict[str, float]:
        total = float(self.counts.sum())
        share = self.counts / max(total, 1.0)
        entropy = float(-(share * torch.log(share.clamp_min(1e-300))).sum())
        used = int((self.counts > 0).sum())
        tokens = total / max(float(self.images), 1.0)
        return {
            "codebook_usage": used / self.codes,
            "codebook_perplexity": math.exp(entropy),
            "dead_codes": float(self.codes - used),
            "bits_per_image": tokens * math.log2(self.codes),
        }
