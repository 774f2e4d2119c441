"""Measuring autoencoders: the metrics shared by training validation and `vaetrain eval`, latent
statistics, speed and fp16 safety, reconstruction of any image size (and of files), `evaluate` and its
HTML report.

May import: errors, frames, models, losses, data and checkpoints (models to evaluate are loaded by
`checkpoints.load_autoencoder`); never training, export or the command line.
"""

from vaetrain.evaluation.latents import LatentAccumulator, LatentStatistics, measure_latent_statistics
from vaetrain.evaluation.metrics import ReconstructionMetrics
from vaetrain.evaluation.recon import reconstruct_files
from vaetrain.evaluation.reconstruct import TilingConfig, encode_decode, reconstruct

__all__ = [
    "LatentAccumulator",
    "LatentStatistics",
    "ReconstructionMetrics",
    "TilingConfig",
    "encode_decode",
    "measure_latent_statistics",
    "reconstruct",
    "reconstruct_files",
]
