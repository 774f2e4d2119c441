"""PSNR, SSIM and LPIPS over a set of images, reduced across processes by torchmetrics."""

from __future__ import annotations

import torch
from torch import nn
from torchmetrics import MeanMetric
from torchmetrics.image import PeakSignalNoiseRatio, StructuralSimilarityIndexMeasure


class ReconstructionMetrics(nn.Module):
    """Per-image PSNR and SSIM on [0, 1] images, averaged over images; LPIPS values are given by the caller.

    PSNR is the mean of per-image PSNRs (the convention of published VAE tables), not the PSNR of the
    pooled error. LPIPS is passed in so the network stays injectable (no download in tests).
    """

    def __init__(self) -> None:
        super().__init__()
        self.psnr = PeakSignalNoiseRatio(data_range=1.0, dim=(1, 2, 3), reduction="elementwise_mean")
        self.ssim = StructuralSimilarityIndexMeasure(data_range=1.0)
        self.lpips = MeanMetric()

    @torch.no_grad()
    def update(self, target: torch.Tensor, reconstruction: torch.Tensor, lpips: torch.Tensor | None = None) -> None:
        """Images in [-1, 1]; reconstructions are clamped to that range first, as a saved image would be."""
        target01 = ((target.float() + 1) / 2).clamp(0, 1)
        reconstruction01 = ((reconstruction.float().clamp(-1, 1) + 1) / 2)
        self.psnr.update(reconstruction01, target01)
        self.ssim.update(reconstruction01, target01)
        if lpips is not None:
            self.lpips.update(lpips.float())

    def compute(self) -> dict[str, torch.Tensor]:
        values = {"psnr": self.psnr.compute(), "ssim": self.ssim.compute()}
        if self.lpips.update_count:
            values["lpips"] = self.lpips.compute()
        return values

    def reset(self) -> None:
        for metric in (self.psnr, self.ssim, self.lpips):
            metric.reset()
