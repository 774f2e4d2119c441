"""What `vaetrain eval` measures per model: the row `evaluate` fills and `report` renders."""

from __future__ import annotations

from dataclasses import dataclass

METRICS = ("psnr", "ssim", "ms_ssim", "lpips", "rfid", "rfvd")
"""What `eval --metrics` can ask for (rfvd: clips only, through an I3D)."""
CODEBOOK = ("codebook_usage", "codebook_perplexity", "dead_codes", "bits_per_image")
"""A discrete autoencoder's use of its codebook on the evaluated images (None for continuous ones)."""
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
    *CODEBOOK,
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
