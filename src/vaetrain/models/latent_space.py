"""The latent normalisation convention: which config fields an export writes, and the formula diffusers'
pipelines apply to them. One decision, made here, so that the latents a diffusion model sees have zero
mean and unit variance under the pipeline family the export is for.

Conventions (the formulas are diffusers' pipelines' own):

- `scale_shift`: `scaling_factor` = 1 / std, `shift_factor` = mean over all latent elements, no
  `latents_mean`/`latents_std`. SD3 and FLUX pipelines compute (z - shift_factor) * scaling_factor
  (`pipeline_stable_diffusion_3_img2img.py`, `pipeline_flux_img2img.py`); SD 1.x/2.x and SANA pipelines
  compute z * scaling_factor, ignoring the shift (unit variance, mean shift_factor * scaling_factor); a
  class without `shift_factor` (AutoencoderDC) stores the scale only.
- `per_channel`: `latents_mean` / `latents_std` per channel and `scaling_factor` 1. SDXL-style pipelines
  compute (z - latents_mean) * scaling_factor / latents_std (`pipeline_stable_diffusion_xl_img2img.py`,
  `prepare_latents`); Wan and Qwen-Image compute (z - latents_mean) / latents_std; LTX-Video's pipelines the
  SDXL formula from the model's buffers (`Family.normalisation` says where a class keeps the fields). Needs
  a class with those fields (AutoencoderKL, AutoencoderKLWan, AutoencoderKLLTXVideo).

- `in_model`: the model normalises its own latents, per channel, inside `encode` and undoes it in `decode`
  (AutoencoderRAE: (z - latents_mean) / (latents_std + 1e-5), the fields shaped (C, 1, 1)); the latents
  `encode` returns are what a diffusion model reads, and a pipeline applies nothing more.

`pipeline_normalize` is what a pipeline computes from a config, whichever fields it holds; distillation's
targets go through it.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from vaetrain.errors import ConfigError
from vaetrain.models.families import family_of

LatentConvention = Literal["scale_shift", "per_channel", "in_model"]
CONVENTIONS: dict[str, str] = {
    "scale_shift": "SD3 / FLUX: (z - shift_factor) * scaling_factor (SD 1.x/2.x and SANA: z * scaling_factor)",
    "per_channel": "SDXL-style: (z - latents_mean) * scaling_factor / latents_std, scaling_factor 1 (Wan, Qwen-Image: (z - latents_mean) / latents_std)",
    "in_model": "AutoencoderRAE: the model's encode returns (z - latents_mean) / (latents_std + 1e-5) per channel; pipelines apply nothing",
}


def default_convention(model: nn.Module) -> LatentConvention:
    """The convention of the pipelines this architecture is used with (its family's first)."""
    return family_of(model).latent_conventions[0]


def convention_fields(
    model: nn.Module, convention: LatentConvention | None, mean: float, std: float, channel_mean: list[float], channel_std: list[float]
) -> dict:
    """The config fields to register for `convention` (None: the architecture's default), from measured
    latent statistics; only fields the model's class has."""
    convention = convention or default_convention(model)
    family = family_of(model)
    if convention not in family.latent_conventions:
        raise ConfigError(f"export latents={convention}: {family.class_name} has no fields for it (it takes {', '.join(family.latent_conventions)})")
    if convention == "in_model":
        shaped = [[[value]] for value in channel_mean], [[[value]] for value in channel_std]
        values = {"latents_mean": shaped[0], "latents_std": shaped[1], "scaling_factor": 1.0}
    elif convention == "per_channel":
        values = {"latents_mean": list(channel_mean), "latents_std": list(channel_std), "scaling_factor": 1.0, "shift_factor": None}
    else:
        values = {"scaling_factor": 1.0 / std, "shift_factor": mean, "latents_mean": None, "latents_std": None}
    return {k: v for k, v in values.items() if k in family.normalisation(model)}


def convention_of(config) -> LatentConvention:
    """Which convention a config's fields follow."""
    if _get(config, "encoder_type") is not None:
        return "in_model"
    return "per_channel" if _get(config, "latents_mean") is not None and _get(config, "latents_std") is not None else "scale_shift"


def _shift_and_scale(config, channels: int, device, dtype, dims: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    """(shift, scale) per channel with normalised = (z - shift) * scale, as a pipeline reads `config`."""
    scaling = float(_get(config, "scaling_factor") or 1.0)
    shape = (1, channels) + (1,) * (dims - 2)  # images (B, C, H, W) or clips (B, C, T, H, W)
    if convention_of(config) == "in_model":  # `encode` has normalised them already
        return torch.zeros(shape, device=device, dtype=dtype), torch.ones(shape, device=device, dtype=dtype)
    if convention_of(config) == "per_channel":
        shift = torch.tensor(_get(config, "latents_mean"), device=device, dtype=dtype).view(shape)
        scale = scaling / torch.tensor(_get(config, "latents_std"), device=device, dtype=dtype).view(shape)
        return shift, scale
    shift = float(_get(config, "shift_factor") or 0.0)
    return torch.full(shape, shift, device=device, dtype=dtype), torch.full(shape, scaling, device=device, dtype=dtype)


def pipeline_normalize(config, latents: torch.Tensor) -> torch.Tensor:
    """The latents a diffusers pipeline feeds its diffusion model, from the VAE's raw latents and config."""
    shift, scale = _shift_and_scale(config, latents.shape[1], latents.device, latents.dtype, latents.ndim)
    return (latents - shift) * scale


def pipeline_denormalize(config, normalised: torch.Tensor) -> torch.Tensor:
    """The inverse: what the pipeline hands the VAE's decoder."""
    shift, scale = _shift_and_scale(config, normalised.shape[1], normalised.device, normalised.dtype, normalised.ndim)
    return normalised / scale + shift


def _get(config, key: str):
    return config.get(key) if hasattr(config, "get") else getattr(config, key, None)
