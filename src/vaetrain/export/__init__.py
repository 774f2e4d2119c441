"""Getting autoencoders out: diffusers folders with measured latent scale (`export_checkpoint`,
`export_model`, the end-of-fit `ExportDiffusers` callback), their model card, and `convert` of any model
reference to the original LDM/SD format or a diffusers folder. Models are read back through
`vaetrain.checkpoints` (the checkpoint schema, `load_autoencoder`, the LDM/SD conversion).

May import: errors, frames, models, data, checkpoints and evaluation (latent statistics, reconstruction
figures); never training (the callback reads the LightningModule it is handed, untyped) or the command line.
"""

from vaetrain.export.callback import ExportDiffusers
from vaetrain.export.diffusers_folder import export_checkpoint, export_model, save_diffusers_folder
from vaetrain.export.formats import convert

__all__ = ["ExportDiffusers", "convert", "export_checkpoint", "export_model", "save_diffusers_folder"]
