"""What `vaetrain eval` measures per model: the row `evaluate` fills and `report` renders."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from vaetrain.models.quantizer import USAGE_KEYS

METRICS = ("psnr", "ssim", "ms_ssim", "lpips", "rfid", "rfvd")
"""What `eval --metrics` can ask for (rfvd: clips only, through an I3D)."""
TOKEN_USAGE = USAGE_KEYS
"""A discrete autoencoder's use of its tokens on the evaluated images (None for continuous ones)."""
RESULT_KEYS = (
    "model",
    *METRICS,
    "flicker",
    "psnr_chunks",
    "temporal_drift",
    "delta_e",
    "bias_channels",
    "kl",
    "latent_mean",
    "latent_std",
    "scaling_factor",
    "shift_factor",
    *TOKEN_USAGE,
    "encode_img_per_s",
    "decode_img_per_s",
    "peak_memory_mb",
    "fp16_max_abs_activation",
    "fp16_nonfinite",
)


@dataclass
class ModelResult:
    """One model's row: the metrics of RESULT_KEYS, plus what the report shows."""

    values: dict
    samples: list[dict]  # {"original", "reconstruction"}: uint8 CHW tensors
    histograms: list[dict]
    errors: list[str]
    fid_reference: dict | None = None  # the originals' Inception statistics this pass measured


def write_csv(rows: list[dict], path: Path) -> None:
    """Per-channel lists become ';'-joined cells so the file stays one row per model."""
    keys = [key for key in rows[0] if key != "errors"]
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=keys, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ";".join(f"{v:.6g}" for v in row[k]) if isinstance(row[k], list) else row[k] for k in keys})
