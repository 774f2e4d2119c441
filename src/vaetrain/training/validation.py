"""What validation measures during training: PSNR, SSIM and LPIPS every time (clips: also PSNR by latent
chunk, `val/psnr_chunk1`, ..., and `val/temporal_drift`), rFID every n-th time."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from vaetrain.data.decoding.pixels import PixelFormat
from vaetrain.errors import ConfigError
from vaetrain.evaluation.metric_networks import build_inception
from vaetrain.evaluation.metrics import ReconstructionMetrics
from vaetrain.evaluation.temporal import CAUSAL_CHUNK
from vaetrain.frames import as_frames
from vaetrain.models.families import family_of
from vaetrain.training.networks import in_layout


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

    def __init__(self, config: ValidationConfig, inception: nn.Module | None = None, usage: nn.Module | None = None, frame_chunk: int = CAUSAL_CHUNK) -> None:
        """`usage`: a discrete autoencoder's token use metric (its family's `token_usage`), measured too;
        `frame_chunk`: the frames per latent chunk of clips (`evaluation.temporal.frame_chunk_of`)."""
        super().__init__()
        self.config = config
        self.metrics = ReconstructionMetrics(frame_chunk=frame_chunk)
        self.usage = usage
        if config.rfid_every_n and inception is None:
            inception = build_inception(config.inception_backbone)
        self.rfid = ReconstructionMetrics(fid_features=inception) if config.rfid_every_n else None
        self.validations = 0

    def use_pixels(self, pixels: PixelFormat | None) -> None:
        """Compare images in the data's own units (bit depth, normalisation: `ReconstructionMetrics`), as
        the run has them now (percentile bounds restored from a checkpoint); None (no data module): as they are."""
        if pixels is None:
            return
        for metrics in (self.metrics, self.rfid):
            if metrics is not None:
                metrics.pixels = pixels

    def update(self, images: torch.Tensor, reconstruction: torch.Tensor, lpips: torch.Tensor | None, tokens: torch.Tensor | None = None) -> None:
        """`tokens`: the images' discrete tokens (images, tokens), for a discrete autoencoder."""
        self.metrics.update(images, reconstruction, lpips)
        if self.usage is not None and tokens is not None:
            self.usage.update(tokens)
        if self._rfid_due():
            self.rfid.update(images, reconstruction)

    def compute_and_reset(self) -> dict[str, float]:
        """Plain floats of this validation (reduced over processes by torchmetrics), under val/ names."""
        values = {k: v for k, v in self.metrics.compute().items() if v is not None}
        if self.usage is not None:
            values |= self.usage.compute()
            self.usage.reset()
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


def validation_batch(module, images: torch.Tensor) -> None:
    """One validation batch of the training module: reconstructed with the inference weights in the run's
    precision (as training sees it), measured in fp32."""
    if images.numel() == 0:  # every image of the batch was a bad file (counted when listed)
        return
    images = in_layout(images, module.plan.channels_last)
    reconstruction, latents = module(images, with_latents=True)
    with torch.autocast(images.device.type, enabled=False):  # the metrics themselves in fp32
        lpips = module.perceptual(as_frames(reconstruction.float()), as_frames(images.float())) if module.perceptual is not None else None
    model = module.inference_autoencoder()
    tokens = family_of(model).tokens(model, latents) if module.val_metrics.usage is not None else None
    module.val_metrics.update(images, reconstruction, lpips, tokens)


def log_validation(module) -> None:
    """All metrics are logged; the per-channel and per-chunk ones (val/psnr_c0, ..., val/psnr_chunk1, ...) stay
    out of the progress bar."""
    values = module.val_metrics.compute_and_reset()
    per_channel = {k: v for k, v in values.items() if re.search(r"_(c|chunk)\d+$", k)}
    module.log_dict({k: v for k, v in values.items() if k not in per_channel}, prog_bar=True, sync_dist=False)
    module.log_dict(per_channel, sync_dist=False)
