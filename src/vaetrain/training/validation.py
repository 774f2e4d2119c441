"""What validation measures during training: PSNR, SSIM and LPIPS every time, rFID every n-th time."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from vaetrain.data.decoding.pixels import PixelFormat
from vaetrain.errors import ConfigError
from vaetrain.evaluation.metrics import CodebookUsage, ReconstructionMetrics
from vaetrain.evaluation.networks import build_inception


@dataclass(frozen=True)
class ValidationConfig:
    """Extra validation metrics (PSNR, SSIM and LPIPS are always measured, on the EMA weights)."""

    rfid_every_n: int = 0
    """Also measure rFID on every n-th validation (0: never); loggable as val/rfid for checkpoint.monitor."""
    inception_backbone: Literal["pretrained", "random"] = "pretrained"
    """rFID's Inception: torch-fidelity's weights (needs the file) or random (offline plumbing, not a measure)."""

    def __post_init__(self) -> None:
        if self.rfid_every_n < 0:
            raise ConfigError(f"model.validation.rfid_every_n must be >= 0, got {self.rfid_every_n}")


class ValidationMetrics(nn.Module):
    """The validation metrics of one run; `inception` injects rFID's feature network (tests)."""

    def __init__(self, config: ValidationConfig, inception: nn.Module | None = None, codes: int | None = None) -> None:
        """`codes`: a discrete autoencoder's codebook size (its use is measured too)."""
        super().__init__()
        self.config = config
        self.metrics = ReconstructionMetrics()
        self.codebook = CodebookUsage(codes) if codes else None
        if config.rfid_every_n and inception is None:
            inception = build_inception(config.inception_backbone)
        self.rfid = ReconstructionMetrics(fid_features=inception) if config.rfid_every_n else None
        self.validations = 0

    def use_pixels(self, pixels: PixelFormat) -> None:
        """Compare images in the data's own units (bit depth, normalisation: `ReconstructionMetrics`)."""
        for metrics in (self.metrics, self.rfid):
            if metrics is not None:
                metrics.pixels = pixels

    def update(self, images: torch.Tensor, reconstruction: torch.Tensor, lpips: torch.Tensor | None, codes: torch.Tensor | None = None) -> None:
        """`codes`: the images' code indices (images, tokens), for a discrete autoencoder."""
        self.metrics.update(images, reconstruction, lpips)
        if self.codebook is not None and codes is not None:
            self.codebook.update(codes)
        if self._rfid_due():
            self.rfid.update(images, reconstruction)

    def compute_and_reset(self) -> dict[str, float]:
        """Plain floats of this validation (reduced over processes by torchmetrics), under val/ names."""
        values = {k: v for k, v in self.metrics.compute().items() if v is not None}
        if self.codebook is not None:
            values |= self.codebook.compute()
            self.codebook.reset()
        if self._rfid_due():
            rfid = self.rfid.compute().get("rfid")
            if rfid is not None:
                values["rfid"] = rfid
            self.rfid.reset()
        self.metrics.reset()
        self.validations += 1
        return {f"val/{k}": v for k, v in values.items()}

    def _rfid_due(self) -> bool:
        return self.rfid is not None and self.validations % self.config.rfid_every_n == 0
