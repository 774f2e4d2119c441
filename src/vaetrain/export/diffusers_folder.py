"""Autoencoder -> diffusers folder, with the latent scale measured on images; a checkpoint -> the same."""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import replace
from pathlib import Path

from torch import nn

from vaetrain.checkpoints.schema import autoencoder_from_checkpoint
from vaetrain.data.decoding.pixels import PIXEL_FORMAT_FILE
from vaetrain.data.sample_sets import Loading, SampleSet, evaluation_samples, pixels_of
from vaetrain.data.sources.spec import Part
from vaetrain.errors import ConfigError
from vaetrain.evaluation.latents import LatentStatistics, measure_latent_statistics
from vaetrain.evaluation.measure import with_progress
from vaetrain.export.model_card import CardFacts, measure_reconstruction, model_card
from vaetrain.models.families import family_of
from vaetrain.models.latent_space import LatentConvention, convention_fields

LATENT_STATISTICS_FILE = "latent_statistics.json"


def save_diffusers_folder(model: nn.Module, out_dir: str | Path, statistics: LatentStatistics | None, files: dict[str, str] | None = None) -> Path:
    """Writes `config.json` (only the fields the class takes) + `diffusion_pytorch_model.safetensors` (+ the
    latent statistics file, + `files`, e.g. the model card) atomically."""
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
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
    images: SampleSet | None,
    *,
    part: Part = "train",
    max_images: int = 256,
    validation: tuple[SampleSet, Part] | None = None,
    facts: CardFacts | None = None,
    latents: LatentConvention | None = None,
    loading: Loading = Loading(),
) -> Path:
    """The model as a diffusers folder with a model card: its latent normalisation measured on up to
    `max_images` evenly spaced images of `images` and written as the `latents` convention's fields (None:
    the architecture's default; no images: the config's are kept), `sample_size` set to the training
    resolution, its reconstruction PSNR/SSIM on the `validation` images."""
    statistics = None
    if images is not None:
        loader = evaluation_samples(images, part=part, max_images=max_images, **loading.of())
        batches = (pixels_of(batch) for batch in with_progress(loader, "latent statistics") if len(pixels_of(batch)))
        statistics = measure_latent_statistics(model, batches)
    facts = facts or CardFacts()
    facts.training_images = facts.training_images or images
    trained_at = facts.training_images.resolution if facts.training_images is not None else None
    if isinstance(trained_at, int):  # diffusers' tiling threshold: tiles of the size it was trained at
        model.register_to_config(**({"sample_size": trained_at} if "sample_size" in model.config else {}))
    if validation is not None:
        facts.metrics = measure_reconstruction(model, *validation, loading=loading)
    files = {}
    pixels = facts.training_images.pixels if facts.training_images is not None else None
    if pixels is not None and not pixels.is_rgb8:  # how images become the model's inputs (data/decoding/pixels.py)
        files[PIXEL_FORMAT_FILE] = json.dumps(pixels.as_dict(), indent=2) + "\n"
    # a distilled student's latents are its teacher's normalised latents by construction: its factors stay
    distilled = bool(facts.settings.get("loss", {}).get("distillation", {}).get("teacher"))
    if statistics is not None and not distilled:
        s = statistics
        model.register_to_config(**convention_fields(model, latents, s.mean, s.std, s.channel_mean, s.channel_std))
    return save_diffusers_folder(model.cpu(), out_dir, statistics, {"README.md": model_card(model, statistics, facts)} | files)


def keeps_normalisation(settings: dict, latents: LatentConvention | None) -> bool:
    """A decoder-only fine-tune of a pretrained model leaves its latent space as it was, so its export keeps
    the normalisation the model's diffusion models read (unless a convention to measure is named)."""
    autoencoder = settings.get("autoencoder") or {}
    return latents is None and bool(autoencoder.get("pretrained")) and autoencoder.get("train_encoder") is False


def export_checkpoint(
    checkpoint: str | Path,
    out_dir: str | Path,
    *,
    images: SampleSet | None = None,
    resolution: int | None = None,
    max_images: int = 256,
    use_ema: bool = True,
    latents: LatentConvention | None = None,
    loading: Loading = Loading(),
) -> Path:
    """`vaetrain export`: the checkpoint's autoencoder as a diffusers folder, latent scale measured on
    `images` (all of them), or else on the training images the checkpoint records (its train part, at
    `resolution` or the training resolution); the card's metrics on its validation images."""
    model, record = autoencoder_from_checkpoint(checkpoint, use_ema=use_ema)
    facts = CardFacts(steps=record.counters.generator_steps, settings=record.settings, training_images=record.sample_set())
    if images is not None:
        if facts.training_images is not None:  # other images, read as the model was trained to read them
            images = replace(images, pixels=facts.training_images.pixels)
        return export_model(
            model, out_dir, images, part="all", max_images=max_images, validation=(images, "all"), facts=facts, latents=latents, loading=loading
        )
    images = record.sample_set()
    if images is None:
        raise ConfigError(f"'{checkpoint}' records no training data; give the images to measure the latent scale on (--data.path)")
    images = replace(images, resolution=resolution or images.resolution)
    measured = None if keeps_normalisation(record.settings, latents) else images
    return export_model(
        model, out_dir, measured, part="train", max_images=max_images, validation=record.validation_images(), facts=facts, latents=latents, loading=loading
    )
