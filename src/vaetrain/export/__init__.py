"""Writing an autoencoder as a diffusers folder that `AutoencoderKL.from_pretrained` loads as is."""

from vaetrain.export.diffusers_folder import autoencoder_from_checkpoint, export_checkpoint, save_diffusers_folder

__all__ = ["autoencoder_from_checkpoint", "export_checkpoint", "save_diffusers_folder"]
