"""One loader for every way a user names an autoencoder: training checkpoint, diffusers folder, LDM file, Hub id."""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import AutoencoderKL

from vaetrain.errors import ConfigError
from vaetrain.export.diffusers_folder import autoencoder_from_checkpoint
from vaetrain.export.ldm import ldm_to_diffusers, read_ldm_state_dict

CHECKPOINT_SUFFIXES = (".ckpt", ".pt", ".pth", ".safetensors")


def load_autoencoder(reference: str | Path, *, use_ema: bool = True) -> AutoencoderKL:
    """A vaetrain `.ckpt` (EMA weights when present), a diffusers folder, an LDM/SD VAE file
    (`.ckpt`/`.safetensors`), or a Hub id (downloaded by diffusers unless cached). In eval mode, fp32."""
    path = Path(reference).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ConfigError(f"'{path}' is a folder without config.json, not a diffusers AutoencoderKL folder")
        return AutoencoderKL.from_pretrained(path).eval()
    if path.suffix in CHECKPOINT_SUFFIXES:
        if not path.is_file():
            raise ConfigError(f"model '{path}' does not exist")
        if path.suffix != ".safetensors" and _is_vaetrain_checkpoint(path):
            return autoencoder_from_checkpoint(path, use_ema=use_ema)[0]
        return ldm_to_diffusers(read_ldm_state_dict(path))
    if str(reference).startswith((".", "/", "~")) or str(reference).count("/") != 1:
        raise ConfigError(f"model '{reference}' is neither a file, a diffusers folder nor a Hub id (owner/name)")
    try:
        return AutoencoderKL.from_pretrained(str(reference)).eval()
    except Exception as error:  # noqa: BLE001 - hub, network and format errors
        raise ConfigError(f"model '{reference}': cannot load from the Hub ({type(error).__name__}: {error})") from error


def _is_vaetrain_checkpoint(path: Path) -> bool:
    """Memory-mapped peek; anything that fails to load weights-only is left to the LDM reader's error."""
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # noqa: BLE001
        return False
    return isinstance(checkpoint, dict) and "vaetrain" in checkpoint
