"""`convert` between the LDM/SD format (`vaetrain.checkpoints.ldm`) and diffusers folders, from any model
reference (`vaetrain.checkpoints.references.load_autoencoder`)."""

from __future__ import annotations

from pathlib import Path

from vaetrain.checkpoints.ldm import diffusers_to_ldm, write_ldm_checkpoint
from vaetrain.checkpoints.references import load_autoencoder
from vaetrain.export.diffusers_folder import save_diffusers_folder


def convert(reference: str | Path, out: str | Path, *, prefix: str = "", use_ema: bool = True) -> Path:
    """`vaetrain convert`: any model reference to an LDM file (OUT ends in .safetensors or .ckpt, keys
    optionally prefixed, e.g. 'first_stage_model.') or to a diffusers folder (any other OUT)."""
    model = load_autoencoder(reference, use_ema=use_ema)
    if str(out).endswith((".safetensors", ".ckpt")):
        return write_ldm_checkpoint(diffusers_to_ldm(model), out, prefix=prefix)
    return save_diffusers_folder(model, out, statistics=None)
