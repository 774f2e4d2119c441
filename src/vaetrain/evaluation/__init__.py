"""Measuring an autoencoder: reconstruction metrics and latent statistics, shared by training and eval."""

from vaetrain.evaluation.latents import LatentStatistics, measure_latent_statistics
from vaetrain.evaluation.metrics import ReconstructionMetrics

__all__ = ["LatentStatistics", "ReconstructionMetrics", "measure_latent_statistics"]
