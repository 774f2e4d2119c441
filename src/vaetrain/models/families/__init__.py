"""Autoencoder families: what the trainer, evaluation and export need to know of a diffusers autoencoder
class, one small file each (`kl.py`: AutoencoderKL, `tiny.py`: AutoencoderTiny, `dc.py`: AutoencoderDC, `vq.py`: VQModel,
`wan.py`: AutoencoderKLWan, with `wan_chunks.py` its causal chunks (streamed or checkpointed), `hunyuan.py`:
AutoencoderKLHunyuanVideo and `ltx.py`: AutoencoderKLLTXVideo, the video families; `rae.py`: AutoencoderRAE, a
frozen representation encoder with a trained ViT decoder).

Everything outside this package talks to an autoencoder through `family_of(model)` (or `FAMILIES[name]`
for one not built yet): encode to a `Posterior`, decode, the decoder's last convolution (the adaptive GAN
weight's layer), the downsampling factor, the base width and the modules to shard. A new family is a new
file registering one `Family` subclass here.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vaetrain.errors import ConfigError
from vaetrain.models.families.base import Family, Posterior
from vaetrain.models.families.dc import DCFamily
from vaetrain.models.families.hunyuan import HunyuanVideoFamily
from vaetrain.models.families.kl import KLFamily
from vaetrain.models.families.ltx import LTXVideoFamily
from vaetrain.models.families.rae import RAEFamily
from vaetrain.models.families.tiny import TinyFamily
from vaetrain.models.families.vq import VQFamily
from vaetrain.models.families.wan import WanFamily

__all__ = ["FAMILIES", "Family", "Posterior", "decode", "downsampling_factor", "encode", "family_of", "family_of_config", "family_of_folder"]

FAMILIES: dict[str, Family] = {
    family.name: family() for family in (KLFamily, TinyFamily, DCFamily, VQFamily, WanFamily, HunyuanVideoFamily, RAEFamily, LTXVideoFamily)
}


def family_of(model: nn.Module) -> Family:
    """The family of a built autoencoder (by class name, so a compiled or wrapped copy works too)."""
    return _by_class_name(type(getattr(model, "_orig_mod", model)).__name__)


def family_of_config(config: dict[str, Any]) -> Family:
    """The family of a diffusers config dict: its `_class_name`, else a field only that class has
    (checkpoints written before families recorded AutoencoderKL configs without `_class_name`)."""
    name = config.get("_class_name")
    if name is None:
        name = (
            "AutoencoderTiny"
            if "latent_magnitude" in config
            else "AutoencoderDC"
            if "encoder_block_types" in config
            else "VQModel"
            if "num_vq_embeddings" in config
            else "AutoencoderKLWan"
            if "temperal_downsample" in config
            else "AutoencoderKLLTXVideo"
            if "decoder_inject_noise" in config
            else "AutoencoderKLHunyuanVideo"
            if "temporal_compression_ratio" in config
            else "AutoencoderRAE"
            if "encoder_type" in config
            else "AutoencoderKL"
        )
    return _by_class_name(name)


def _by_class_name(name: str) -> Family:
    for family in FAMILIES.values():
        if family.class_name == name:
            return family
    raise ConfigError(f"autoencoder class '{name}' is not one vaetrain trains ({', '.join(f.class_name for f in FAMILIES.values())})")


def family_of_folder(folder: str | Path, subfolder: str | None = None, default: str = "kl") -> Family:
    """The family a diffusers folder holds, read from its config.json's `_class_name`; a folder without one
    (a Hub id) is taken as the `default` family's (AutoencoderKL's unless named)."""
    config = Path(folder).expanduser() / (subfolder or "") / "config.json"
    if not config.is_file():
        return FAMILIES[default]
    try:
        return family_of_config(json.loads(config.read_text()))
    except json.JSONDecodeError as error:
        raise ConfigError(f"'{config}' is not valid JSON: {error}") from error


def encode(model: nn.Module, images: torch.Tensor) -> Posterior:
    return family_of(model).encode(model, images)


def decode(model: nn.Module, latents: torch.Tensor) -> torch.Tensor:
    return family_of(model).decode(model, latents)


def downsampling_factor(model: nn.Module) -> int:
    """How many pixels one latent element spans along each side (8 for SD's f8 autoencoders)."""
    return family_of(model).downsampling_factor(model)
