"""Checkpoint -> diffusers folder, with the latent scale measured on the training images."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import torch
from diffusers import AutoencoderKL

from vaetrain.data.datamodule import ImageDataModule, images_of
from vaetrain.errors import ConfigError
from vaetrain.evaluation.latents import LatentStatistics, measure_latent_statistics

LATENT_STATISTICS_FILE = "latent_statistics.json"


def save_diffusers_folder(model: AutoencoderKL, out_dir: str | Path, statistics: LatentStatistics | None) -> Path:
    """Writes `config.json` + `diffusion_pytorch_model.safetensors` (+ latent statistics) atomically.

    `scaling_factor` = 1/std and `shift_factor` = mean of the measured latents, so a diffusion pipeline
    that reads them (SD: scale only; SD3/Flux: shift and scale) gets unit-variance latents.
    """
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    if statistics is not None:
        model.register_to_config(scaling_factor=statistics.scaling_factor, shift_factor=statistics.shift_factor)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        model.save_pretrained(staging, safe_serialization=True)
        if statistics is not None:
            (staging / LATENT_STATISTICS_FILE).write_text(json.dumps(statistics.as_dict(), indent=2) + "\n")
        if out_dir.exists():
            shutil.rmtree(out_dir)
        staging.rename(out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out_dir


def autoencoder_from_checkpoint(path: str | Path, *, use_ema: bool = True) -> tuple[AutoencoderKL, dict]:
    """The autoencoder of a vaetrain checkpoint (EMA weights when present and updated), loaded weights-only."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"checkpoint '{path}' does not exist")
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    meta = checkpoint.get("vaetrain")
    if meta is None:
        raise ConfigError(f"'{path}' is not a vaetrain checkpoint (no 'vaetrain' section)")
    state_dict = checkpoint["state_dict"]
    ema_updated = int(state_dict.get("ema.n_averaged", torch.tensor(0))) > 0
    prefix = "ema.module." if use_ema and ema_updated else "autoencoder."
    weights = {k[len(prefix) :]: v for k, v in state_dict.items() if k.startswith(prefix)}
    model = AutoencoderKL.from_config(meta["autoencoder_config"])
    model.load_state_dict(weights, strict=True)
    return model.eval(), meta


def export_checkpoint(
    checkpoint: str | Path,
    out_dir: str | Path,
    *,
    images: str | Path | None = None,
    resolution: int | None = None,
    max_images: int = 256,
    use_ema: bool = True,
) -> Path:
    """`vaetrain export`: the checkpoint's autoencoder as a diffusers folder, latent scale measured on
    `images` (default: the training images recorded in the checkpoint)."""
    model, meta = autoencoder_from_checkpoint(checkpoint, use_ema=use_ema)
    data = meta.get("data") or {}
    images = images or data.get("path")
    statistics = None
    if images:
        datamodule = ImageDataModule(
            path=str(images), resolution=resolution or data.get("resolution") or 256, batch_size=8, num_workers=0
        )
        loader = datamodule.evaluation_dataloader(max_images)
        statistics = measure_latent_statistics(model, (images_of(batch) for batch in loader))
    return save_diffusers_folder(model, out_dir, statistics)
