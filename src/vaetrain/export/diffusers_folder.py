"""Autoencoder -> diffusers folder, with the latent scale measured on images; a checkpoint -> the same."""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import replace
from pathlib import Path

from torch import nn

from vaetrain.data.loading import ImageSet, evaluation_images, images_of
from vaetrain.data.pixels import PIXEL_FORMAT_FILE
from vaetrain.data.sources import Part
from vaetrain.errors import ConfigError
from vaetrain.evaluation.latents import LatentStatistics, measure_latent_statistics
from vaetrain.export.model_card import CardFacts, measure_reconstruction, model_card
from vaetrain.models.families import family_of
from vaetrain.training.checkpoint import autoencoder_from_checkpoint

LATENT_STATISTICS_FILE = "latent_statistics.json"


def save_diffusers_folder(
    model: nn.Module, out_dir: str | Path, statistics: LatentStatistics | None, files: dict[str, str] | None = None, *, set_scale: bool = True
) -> Path:
    """Writes `config.json` + `diffusion_pytorch_model.safetensors` (+ latent statistics, + `files`, e.g. the
    model card) atomically.

    `scaling_factor` = 1/std and `shift_factor` = mean of the measured latents, so a diffusion pipeline
    that reads them (SD: scale only; SD3/Flux: shift and scale) gets unit-variance latents; per-channel
    pipelines read `latents_mean`/`latents_std`. `set_scale` False (a distilled student, whose latents are
    its teacher's scaled latents by construction) keeps the config's factors and only writes the statistics file.
    """
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    if statistics is not None and set_scale:
        values = dict(scaling_factor=statistics.scaling_factor, shift_factor=statistics.shift_factor,
                      latents_mean=statistics.channel_mean, latents_std=statistics.channel_std)
        model.register_to_config(**{k: v for k, v in values.items() if k in model.config})  # what the class reads back
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        model.save_pretrained(staging, safe_serialization=True)
        config_file = staging / "config.json"  # only what the class takes back (see `Family.class_fields`)
        config_file.write_text(json.dumps(family_of(model).class_fields(json.loads(config_file.read_text())), indent=2, sort_keys=True) + "\n")
        if statistics is not None:
            (staging / LATENT_STATISTICS_FILE).write_text(json.dumps(statistics.as_dict(), indent=2) + "\n")
        for name, text in (files or {}).items():
            (staging / name).write_text(text)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        staging.rename(out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out_dir


def export_model(
    model: nn.Module,
    out_dir: str | Path,
    images: ImageSet | None,
    *,
    part: Part = "train",
    max_images: int = 256,
    validation: tuple[ImageSet, Part] | None = None,
    facts: CardFacts | None = None,
) -> Path:
    """The model as a diffusers folder with a model card: its latent scale measured on up to `max_images`
    evenly spaced images of `images` (`scaling_factor`/`shift_factor` over all elements, `latents_mean`/
    `latents_std` per channel; none: the config's are kept), `sample_size` set to the training resolution,
    its reconstruction PSNR/SSIM on the `validation` images."""
    statistics = None
    if images is not None:
        loader = evaluation_images(images, part=part, max_images=max_images)
        statistics = measure_latent_statistics(model, (images_of(batch) for batch in loader if len(images_of(batch))))
    facts = facts or CardFacts()
    facts.training_images = facts.training_images or images
    trained_at = facts.training_images.resolution if facts.training_images is not None else None
    if isinstance(trained_at, int):  # diffusers' tiling threshold: tiles of the size it was trained at
        model.register_to_config(**({"sample_size": trained_at} if "sample_size" in model.config else {}))
    if validation is not None:
        facts.metrics = measure_reconstruction(model, *validation)
    card = model_card(model, statistics, facts)
    files = {"README.md": card}
    pixels = facts.training_images.pixels if facts.training_images is not None else None
    if pixels is not None and not pixels.is_rgb8:  # how images become the model's inputs (data/pixels.py)
        files[PIXEL_FORMAT_FILE] = json.dumps(pixels.as_dict(), indent=2) + "\n"
    distilled = bool(facts.settings.get("loss", {}).get("distillation", {}).get("teacher"))
    return save_diffusers_folder(model.cpu(), out_dir, statistics, files, set_scale=not distilled)


def export_checkpoint(
    checkpoint: str | Path,
    out_dir: str | Path,
    *,
    images: ImageSet | None = None,
    resolution: int | None = None,
    max_images: int = 256,
    use_ema: bool = True,
) -> Path:
    """`vaetrain export`: the checkpoint's autoencoder as a diffusers folder, latent scale measured on
    `images` (all of them), or else on the training images the checkpoint records (its train part, at
    `resolution` or the training resolution); the card's metrics on its validation images."""
    model, record = autoencoder_from_checkpoint(checkpoint, use_ema=use_ema)
    facts = CardFacts(steps=record.counters.generator_steps, settings=record.settings, training_images=record.image_set())
    if images is not None:
        if facts.training_images is not None:  # other images, read as the model was trained to read them
            images = replace(images, pixels=facts.training_images.pixels)
        return export_model(model, out_dir, images, part="all", max_images=max_images, validation=(images, "all"), facts=facts)
    images = record.image_set()
    if images is None:
        raise ConfigError(f"'{checkpoint}' records no training data; give the images to measure the latent scale on (--data.path)")
    images = replace(images, resolution=resolution or images.resolution)
    return export_model(model, out_dir, images, part="train", max_images=max_images, validation=record.validation_images(), facts=facts)
