"""The exported folder's README.md: a Hugging Face model card with what a user of the VAE needs (latent
shape and scale, how it was trained, how well it reconstructs held-out images), and the upload to the Hub."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from torch import nn

from vaetrain.data.sample_sets import Loading, SampleSet, evaluation_samples
from vaetrain.data.sources.spec import Part
from vaetrain.errors import ConfigError
from vaetrain.evaluation.latents import LatentStatistics
from vaetrain.evaluation.measure import autoencoder_pairs, measure
from vaetrain.models.families import downsampling_factor, family_of
from vaetrain.models.latent_space import CONVENTIONS, convention_of


@dataclass
class CardFacts:
    """What the card says beyond the model itself; every field optional."""

    steps: int | None = None
    settings: dict = field(default_factory=dict)
    training_images: SampleSet | None = None
    metrics: dict | None = None  # from `measure_reconstruction`


def measure_reconstruction(model: nn.Module, images: SampleSet, part: Part, max_images: int = 64, loading: Loading = Loading()) -> dict | None:
    """PSNR and SSIM of the model's reconstructions of up to `max_images` images of `part` (None: no images)."""
    device = next(model.parameters()).device  # rank 0 alone exports: this process's images only
    measured = measure(
        evaluation_samples(images, part=part, max_images=max_images, **loading.of()), autoencoder_pairs(model), pixels=images.pixels, device=device
    )
    if not measured.images:
        return None
    values = measured.values
    return {"psnr": values["psnr"], "ssim": values["ssim"], "images": measured.images, "resolution": images.resolution, "part": part}


def _pixels(pixels) -> str:
    """How images become the model's input; `pixel_format.json` beside this card holds the same."""
    if pixels.normalization == "percentile":
        scale = (
            f"each channel's {pixels.percentiles[0]}-{pixels.percentiles[1]} percentiles (low {list(pixels.low)}, high {list(pixels.high)}) -> [-1, 1], clipped"
        )
    else:
        low, high = pixels.value_range or (0, int(pixels.peak))
        scale = f"[{low}, {high}] -> [-1, 1]"
    return f"{pixels.channels} channels, {pixels.bit_depth}-bit; {scale} (`pixel_format.json`, `vaetrain.data.decoding.pixels.PixelFormat`)"


def model_card(model: nn.Module, statistics: LatentStatistics | None, facts: CardFacts) -> str:
    config, factor = model.config, downsampling_factor(model)
    loss = facts.settings.get("loss", {})
    recipe = ", ".join(f"{k} {loss[k]}" for k in ("balance", "gan_loss", "reconstruction", "perceptual_weight", "kl_weight") if k in loss)
    posterior = facts.settings.get("autoencoder", {}).get("posterior", "learned")
    data, family = facts.training_images, family_of(model)
    channels = family.latent_channels(model)
    teacher = loss.get("distillation", {}).get("teacher")
    if family.deterministic:
        posterior = f"deterministic: `vae.encode(images).{'latents' if family.name == 'tiny' else 'latent'}` is the latent"
    else:
        posterior = (
            "fixed variance: latent_dist.mean is the latent, latent_dist.std ~3e-7" if posterior == "fixed" else "diagonal Gaussian (mean, log-variance)"
        )
    rows = [
        ("architecture", family.describe(model)),
        ("latent", _latent_shape(family, model, channels, factor)),
        ("posterior", posterior),
        (
            "latent normalisation",
            f"scaling_factor {config.scaling_factor}: distilled from `{teacher}`, its latents are the latents the teacher's pipeline feeds its diffusion model"
            if teacher
            else _factors(config, statistics),
        ),
        ("training", (f"{facts.steps} generator steps" if facts.steps is not None else "unknown steps") + (f"; {recipe}" if recipe else "")),
        ("data", _describe(data) if data else "not recorded"),
    ]
    if data is not None and not data.pixels.is_rgb8:
        rows.append(("pixels", _pixels(data.pixels)))
    if facts.metrics:
        m = facts.metrics
        rows.append(
            (
                "reconstruction",
                f"PSNR {m['psnr']:.2f} dB, SSIM {m['ssim']:.4f} on {m['images']} {m['part']} images at {m['resolution']} px (measured at export)",
            )
        )
    table = "\n".join(f"| {name} | {value} |" for name, value in rows)
    return f"""---
library_name: diffusers
tags:
- vae
- autoencoder
- latent-diffusion
- vaetrain
---

# Autoencoder trained with vaetrain

| | |
|---|---|
{table}

```python
{_usage(family, config)}
```
"""


def _usage(family, config) -> str:
    sample = "latent_dist.sample()" if not family.deterministic else "latents" if family.name == "tiny" else "latent"
    return f"""import torch
from diffusers import {family.class_name}

vae = {family.class_name}.from_pretrained("path/or/repo")
latents = vae.encode(images).{sample}  # images in [-1, 1]
{_normalise_line(family, config)}"""


def push_to_hub(folder: str | Path, repo_id: str, *, private: bool = False, api=None) -> str:
    """Creates (if needed) the model repo and uploads the folder with huggingface_hub; returns its URL."""
    if api is None:
        from huggingface_hub import HfApi

        api = HfApi()
    try:
        api.create_repo(repo_id=repo_id, repo_type="model", private=private, exist_ok=True)
        info = api.upload_folder(repo_id=repo_id, folder_path=str(folder), repo_type="model", commit_message="Upload autoencoder (vaetrain)")
    except Exception as error:  # noqa: BLE001 - network, auth and Hub errors come in many types
        raise ConfigError(
            f"export: pushing '{folder}' to the Hub as '{repo_id}' failed: {type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
        ) from error
    return str(getattr(info, "commit_url", None) or f"https://huggingface.co/{repo_id}")


def _latent_shape(family, model, channels: int, factor: int) -> str:
    if family.video:
        t = family.temporal_factor(model)
        return f"{channels} channels, 1/{factor} of the frame side, 1 + (T - 1)/{t} latent frames: {channels} x (1 + (T-1)/{t}) x H/{factor} x W/{factor}"
    return f"{channels} channels at 1/{factor} of the image side: {channels} x H/{factor} x W/{factor}"


def _factors(config, statistics: LatentStatistics | None) -> str:
    convention = convention_of(config)
    if convention == "per_channel":
        means, stds = ([round(v, 4) for v in values] for values in (config.latents_mean, config.latents_std))
        fields = f"latents_mean {means}, latents_std {stds}" + (f", scaling_factor {config.scaling_factor:.6g}" if "scaling_factor" in config else "")
    else:
        fields = f"scaling_factor {config.scaling_factor:.6g}, shift_factor {config.get('shift_factor') or 0:.6g}"
    measured = "as configured" if statistics is None else f"measured on {statistics.count} training images"
    return f"`{convention}`: {fields} ({measured}); pipelines computing {CONVENTIONS[convention]} see zero-mean, unit-variance latents"


def _normalise_line(family, config) -> str:
    """The pipeline's own formula for this config's convention (`models.latent_space`)."""
    if convention_of(config) == "per_channel" and "scaling_factor" not in config:  # Wan's pipelines
        return (
            "mean, std = (torch.tensor(v).view(1, -1, 1, 1, 1) for v in (vae.config.latents_mean, vae.config.latents_std))\n"
            "latents = (latents - mean) / std  # what Wan's pipelines feed their diffusion model"
        )
    if convention_of(config) == "per_channel":
        return (
            "mean, std = (torch.tensor(v).view(1, -1, 1, 1) for v in (vae.config.latents_mean, vae.config.latents_std))\n"
            "latents = (latents - mean) * vae.config.scaling_factor / std  # what an SDXL-style pipeline's diffusion model sees"
        )
    shift = "(latents - (vae.config.shift_factor or 0))" if "shift_factor" in config else "latents"
    return f"latents = {shift} * vae.config.scaling_factor  # what the diffusion model sees (SD3/FLUX formula)"


def _describe(images: SampleSet) -> str:
    source = images.source
    where = "the images bundled with vaetrain" if source.path is None else f"{source.kind} `{source.path}`"
    extra = f", split {source.split}, column {source.image_column}" if source.kind == "hf" else ""
    return f"{where}{extra}, {images.resolution} px crops"
