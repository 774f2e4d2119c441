"""One loader for every way a user names an autoencoder (training checkpoint, diffusers folder, LDM file,
Hub id), and what a training checkpoint records about its images (the held-out part, the pixel format)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from vaetrain.checkpoints.ldm import ldm_to_diffusers, read_ldm_state_dict
from vaetrain.checkpoints.schema import RunRecord, autoencoder_from_checkpoint, is_vaetrain_checkpoint, load_checkpoint
from vaetrain.data.decoding.pixels import PixelFormat, read_pixel_format
from vaetrain.data.sample_sets import SampleSet
from vaetrain.data.sources.spec import Part
from vaetrain.errors import ConfigError
from vaetrain.models.autoencoder import load_pretrained_autoencoder

CHECKPOINT_SUFFIXES = (".ckpt", ".pt", ".pth", ".safetensors")


def check_model_reference(reference: str | Path) -> None:
    """A one-line error, before anything heavy loads, when `reference` cannot name a model: a missing path,
    a folder without config.json, a file that is not a checkpoint, or something not shaped like a Hub id."""
    path = Path(reference).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ConfigError(f"'{path}' is a folder without config.json, not a diffusers autoencoder folder")
    elif path.is_file():
        if path.suffix not in CHECKPOINT_SUFFIXES:
            raise ConfigError(f"'{path}' is a file but not a model (a vaetrain .ckpt, an LDM/SD .ckpt or .safetensors, or a diffusers folder)")
    elif path.suffix in CHECKPOINT_SUFFIXES or str(reference).startswith((".", "/", "~")) or str(reference).count("/") != 1:
        raise ConfigError(f"model '{reference}' does not exist (nor is it a Hub id owner/name)")


def load_autoencoder(reference: str | Path, *, use_ema: bool = True) -> nn.Module:
    """A vaetrain `.ckpt` (EMA weights when present, unless `use_ema` is False), a diffusers folder, an
    LDM/SD VAE file (`.ckpt`/`.safetensors`), or a Hub id (downloaded by diffusers unless cached). In eval
    mode, fp32."""
    check_model_reference(reference)
    path = Path(reference).expanduser()
    if path.is_dir():
        return load_pretrained_autoencoder(path)
    if path.is_file():
        if path.suffix != ".safetensors" and is_vaetrain_checkpoint(path):
            return autoencoder_from_checkpoint(path, use_ema=use_ema)[0]
        return ldm_to_diffusers(read_ldm_state_dict(path))
    try:
        return load_pretrained_autoencoder(str(reference))
    except Exception as error:  # noqa: BLE001 - hub, network and format errors
        raise ConfigError(f"model '{reference}': cannot load from the Hub ({type(error).__name__}: {error})") from error


def held_out_images(reference: str | Path) -> tuple[SampleSet, Part, RunRecord]:
    """The images a training run held out (its validation images, never trained on), as its checkpoint
    records them, with the part of their source and the record."""
    path = Path(reference).expanduser()
    if not (path.suffix == ".ckpt" and path.is_file() and is_vaetrain_checkpoint(path)):
        raise ConfigError(f"--held-out needs a vaetrain training checkpoint as the first model; '{reference}' is not one")
    record = load_checkpoint(path)[1]
    validation = record.validation_images()
    if validation is None:
        raise ConfigError(f"'{reference}' records no validation images (a checkpoint written before vaetrain recorded them)")
    return validation[0], validation[1], record


def trained_clip_length(reference: str | Path) -> int | None:
    """The most frames of any clip a vaetrain checkpoint's run trained on (`RunRecord.longest_clip`, read by a
    memory-mapped peek); None for other references and runs on images."""
    path = Path(reference).expanduser()
    if not (path.suffix == ".ckpt" and path.is_file() and is_vaetrain_checkpoint(path)):
        return None
    checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    return RunRecord.read_from(checkpoint, where=f"'{path}'").longest_clip()


def recorded_pixel_format(reference: str | Path) -> PixelFormat | None:
    """How a model's training read images (channels, bit depth, normalisation with its measured bounds): a
    vaetrain checkpoint's record or an exported folder's `pixel_format.json`; None where neither says."""
    path = Path(reference).expanduser()
    if path.is_dir():
        return read_pixel_format(path)
    if path.suffix == ".ckpt" and path.is_file() and is_vaetrain_checkpoint(path):
        images = load_checkpoint(path)[1].sample_set()
        return images.pixels if images is not None else None
    return None
