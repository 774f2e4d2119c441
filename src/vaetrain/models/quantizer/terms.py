"""The quantiser's loss terms on encoder outputs and their codes (`training.features.codebook` weighs them by
`model.loss.codebook_weight`)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def vq_loss(inputs: torch.Tensor, codes: torch.Tensor, beta: float, *, legacy: bool, codebook_trained: bool = True) -> torch.Tensor:
    """Vector quantisation's codebook and commitment terms on encoder outputs `inputs` and their codes
    (taming-transformers, taming/modules/vqvae/quantize.py, `VectorQuantizer2.forward`):
    beta x mean((sg[codes] - inputs)^2) + mean((codes - sg[inputs])^2), or, `legacy` (the reference's and
    diffusers' default, which LDM trained with), 1 x the commitment term + beta x the codebook term. A codebook
    not trained by its loss (EMA updates, VQ-VAE-2) keeps the commitment term only, at beta."""
    commitment = torch.mean((codes.detach() - inputs) ** 2)
    if not codebook_trained:
        return beta * commitment
    codebook = torch.mean((codes - inputs.detach()) ** 2)
    return commitment + beta * codebook if legacy else beta * commitment + codebook


def fsq_bound_penalty(inputs: torch.Tensor) -> torch.Tensor:
    """mean(relu(|z| - 1)^2): zero inside FSQ's [-1, 1] grid, pulling latents back from outside it."""
    return F.relu(inputs.abs() - 1).pow(2).mean()
