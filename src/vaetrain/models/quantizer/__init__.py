"""The `vq` family's quantiser as one unit: its settings (`config`), the lookup (`lookup`), the codebook's
training state (`codebook`, `reservoir`), its loss terms (`terms`) and its use over a set of images
(`usage`); `training.features.codebook` trains it, so that the exported `VQModel` quantises exactly as
training did.

Inference in diffusers (`VectorQuantizer.forward`) takes the nearest codebook row by `torch.cdist` and
passes `z + (z_q - z).detach()` to `post_quant_conv`. Training here does the same lookup and the same
expression (`lookup`), so the exported folder decodes bit for bit what the training forward decoded; the
quantiser's own state (EMA statistics, usage counts) lives in `codebook.Codebook`, a network of the
training module.

- `vq`: taming-transformers' `VectorQuantizer2` (taming/modules/vqvae/quantize.py, `forward`): nearest
  code, straight-through estimator, loss beta x commitment + codebook (`legacy_loss: true`, the reference's
  default that LDM trained with, puts beta on the codebook term instead: `terms.vq_loss`).
  Options to keep codes alive, each applied after a finite update only (`Codebook.commit`):
  EMA codebook updates (VQ-VAE-2; rosinality/vq-vae-2-pytorch, vqvae.py, `Quantize.forward`), k-means
  initialisation from the first accumulated batch (lucidrains/vector-quantize-pytorch's `kmeans_init`),
  restarting dead codes from recent encoder outputs (openai/jukebox, jukebox/vqvae/bottleneck.py,
  `BottleneckBlock.update_k`, threshold on an EMA of each code's use), and a low-dimensional lookup
  (`embed_dim`, LlamaGen's 8-dimensional codes).
- `fsq`: finite scalar quantisation (Mentzer et al. 2023): each of `len(levels)` dimensions rounded to
  `levels[i]` evenly spaced values in [-1, 1]. The grid is written out as the codebook (so diffusers' nearest
  row is exactly the per-dimension rounding); no codebook loss. Deviations: the values are symmetric for
  even level counts too (the paper offsets them by half a step); the paper bounds with tanh, here the
  straight-through estimator is diffusers' identity and `fsq_bound_weight` x mean(relu(|z| - 1)^2) keeps
  the latents inside the grid (a tanh or clamp in the forward would change what the export computes).

vector-quantize-pytorch is not used: it updates its EMA codebook, k-means state and code expiry inside
`forward`, before the step knows whether the update is finite (a NaN batch would poison the codebook for
good), and per micro-batch (so accumulation would change the recipe).
"""

from vaetrain.models.quantizer.codebook import Codebook
from vaetrain.models.quantizer.config import ALIVE_USE, FSQ_MAX_CODES, QuantizerConfig
from vaetrain.models.quantizer.lookup import Quantized, assign, code_indices, fsq_grid, fsq_indices, full, lookup
from vaetrain.models.quantizer.terms import fsq_bound_penalty, vq_loss
from vaetrain.models.quantizer.usage import USAGE_COLUMNS, USAGE_KEYS, TokenUsage

__all__ = [
    "ALIVE_USE",
    "FSQ_MAX_CODES",
    "USAGE_COLUMNS",
    "USAGE_KEYS",
    "Codebook",
    "QuantizerConfig",
    "Quantized",
    "TokenUsage",
    "assign",
    "code_indices",
    "fsq_bound_penalty",
    "fsq_grid",
    "fsq_indices",
    "full",
    "lookup",
    "vq_loss",
]
