"""What `vaetrain eval` measures per model: the row `evaluate` fills and `report` renders."""

from __future__ import annotations

from dataclasses import dataclass

from vaetrain.models.quantizer import USAGE_KEYS

METRICS = ("psnr", "ssim", "ms_ssim", "lpips", "rfid", "rfvd")
"""What `eval --metrics` can ask for (rfvd: clips only, through an I3D)."""
TOKEN_USAGE = USAGE_KEYS
"""A discrete autoencoder's use of its tokens on the evaluated images (None for continuous ones)."""
RESULT_KEYS = (
    "model",
    *METRICS,
    "flicker",
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
