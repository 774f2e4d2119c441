"""vaetrain: train, fine-tune, evaluate and export the KL autoencoders of latent diffusion models."""

__version__ = "0.1.0"
