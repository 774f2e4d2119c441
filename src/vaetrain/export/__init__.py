"""Autoencoder formats: diffusers folders (export), the original LDM/SD checkpoint format (convert) and one
loader that accepts any of them."""

from vaetrain.export.diffusers_folder import autoencoder_from_checkpoint, export_checkpoint, save_diffusers_folder
from vaetrain.export.formats import load_autoencoder
from vaetrain.export.ldm import diffusers_to_ldm, ldm_to_diffusers, read_ldm_state_dict, write_ldm_checkpoint

__all__ = [
    "autoencoder_from_checkpoint",
    "diffusers_to_ldm",
    "export_checkpoint",
    "ldm_to_diffusers",
    "load_autoencoder",
    "read_ldm_state_dict",
    "save_diffusers_folder",
    "write_ldm_checkpoint",
]
