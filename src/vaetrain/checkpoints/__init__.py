"""Reading models back: the checkpoint schema (`schema`: what vaetrain adds to a Lightning checkpoint, its
`RunRecord`, the autoencoder's weights in it), the one loader for every way a user names a model
(`references.load_autoencoder`: a vaetrain `.ckpt`, a diffusers folder, an LDM/SD file, a Hub id) and the
LDM/SD format's conversion (`ldm`). Anything that only reads checkpoints (evaluation, export, the command
line) reads them here, without the training code.

May import: errors, frames, plan (the step counters a record holds), models and data; never losses, evaluation, training, export or the command line.
"""

from vaetrain.checkpoints.ldm import diffusers_to_ldm, ldm_to_diffusers, read_ldm_state_dict, write_ldm_checkpoint
from vaetrain.checkpoints.references import check_model_reference, held_out_images, load_autoencoder, recorded_pixel_format
from vaetrain.checkpoints.schema import RunRecord, autoencoder_from_checkpoint, is_vaetrain_checkpoint, load_checkpoint

__all__ = [
    "RunRecord",
    "autoencoder_from_checkpoint",
    "check_model_reference",
    "diffusers_to_ldm",
    "held_out_images",
    "is_vaetrain_checkpoint",
    "ldm_to_diffusers",
    "load_autoencoder",
    "load_checkpoint",
    "read_ldm_state_dict",
    "recorded_pixel_format",
    "write_ldm_checkpoint",
]
