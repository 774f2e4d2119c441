"""Getting autoencoders out and in: diffusers folders with measured latent scale (`export_checkpoint`,
`export_model`, the end-of-fit `ExportDiffusers` callback), the original LDM/SD format (`convert`), and
`load_autoencoder` for every way a user names a model.

May import: errors, models, data, evaluation (latent statistics) and `training.checkpoint` (the checkpoint
schema); never the command line.
"""

from vaetrain.export.callback import ExportDiffusers
from vaetrain.export.diffusers_folder import export_checkpoint, export_model, save_diffusers_folder
from vaetrain.export.formats import convert, load_autoencoder
from vaetrain.export.ldm import diffusers_to_ldm, ldm_to_diffusers, read_ldm_state_dict, write_ldm_checkpoint

__all__ = [
    "ExportDiffusers",
    "convert",
    "diffusers_to_ldm",
    "export_checkpoint",
    "export_model",
    "ldm_to_diffusers",
    "load_autoencoder",
    "read_ldm_state_dict",
    "save_diffusers_folder",
    "write_ldm_checkpoint",
]
