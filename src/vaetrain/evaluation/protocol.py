"""Evaluation protocols: fixed ways to cut, measure and compare, so a number means the same in every
report. `imagenet-256` is the one most published rFID tables use; the originals' Inception statistics are
kept in a file (`FidReference`) that later runs, and other people, reuse instead of recomputing."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from vaetrain.errors import ConfigError
from vaetrain.evaluation.metrics import FID_REFERENCE_STATES


@dataclass(frozen=True)
class Protocol:
    name: str
    resolution: int
    eval_crop: str
    metrics: tuple[str, ...]
    description: str


PROTOCOLS = {
    "imagenet-256": Protocol(
        "imagenet-256",
        256,
        "adm",
        ("psnr", "ssim", "lpips", "rfid"),
        "ImageNet-1k validation (all 50,000 images of --data.path), ADM's centre crop to 256 px (guided-diffusion "
        "`center_crop_arr`), rFID against the cropped originals (torch-fidelity's 2048-d Inception pool), PSNR, SSIM and "
        "LPIPS (AlexNet) on the same crops",
    )
}


class FidReference:
    """The originals' Inception statistics for `protocol` on `images` (a count), in a `.pt` file."""

    def __init__(self, path: str | Path, protocol: str) -> None:
        self.path, self.protocol = Path(path), protocol

    def load(self, images: int | None = None) -> dict | None:
        """The stored statistics (None when the file does not exist yet); a file of another protocol or
        image count is a one-line error."""
        if not self.path.is_file():
            return None
        stored = torch.load(self.path, map_location="cpu", weights_only=True)
        if not isinstance(stored, dict) or stored.get("protocol") != self.protocol or not all(k in stored for k in FID_REFERENCE_STATES):
            raise ConfigError(f"--fid-reference '{self.path}' holds no {self.protocol} Inception statistics; remove it or name another file")
        if images is not None and int(stored["real_features_num_samples"]) != images:
            raise ConfigError(f"--fid-reference '{self.path}' was measured on {int(stored['real_features_num_samples'])} images, not these {images}")
        return stored

    def save(self, states: dict) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.path.with_name(f".{self.path.name}.partial")
        torch.save({"protocol": self.protocol} | states, partial)
        partial.replace(self.path)
