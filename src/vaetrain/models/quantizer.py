"""The `vq` family's quantisers, trained so that the exported `VQModel` quantises exactly as training did.

Inference in diffusers (`VectorQuantizer.forward`) takes the nearest codebook row by `torch.cdist` and
passes `z + (z_q - z).detach()` to `post_quant_conv`. Training here does the same lookup and the same
expression (`lookup`), so the exported folder decodes bit for bit what the training forward decoded; the
quantiser's own state (EMA statistics, usage counts) lives in `models.codebook.Codebook`, a network of the
training module.

- `vq`: taming-transformers' `VectorQuantizer2` (taming/modules/vqvae/quantize.py, `forward`): nearest
  code, straight-through estimator, loss beta x commitment + codebook (`legacy_loss: true`, the reference's
  default that LDM trained with, puts beta on the codebook term instead: `losses.terms.vq_loss`).
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

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch.distributed.tensor import DTensor, distribute_tensor

from vaetrain.errors import ConfigError

ALIVE_USE = 1e-3
"""A code is in use while the EMA of its uses per step (`Codebook.usage`) stays above this."""
FSQ_MAX_CODES = 2**16
"""The largest FSQ grid written out as a codebook (65,536 rows)."""


@dataclass(frozen=True)
class QuantizerConfig:
    """The `vq` family's quantiser and how its codebook is kept alive."""

    kind: Literal["vq", "fsq"] = "vq"
    """vq: a learned codebook (taming's VectorQuantizer2); fsq: finite scalar quantisation (fixed grid)."""
    codebook_size: int = 8192
    """vq: codebook entries (LDM's VQ-f4: 8192, VQ-f8/f16: 16384); fsq: the product of `levels`."""
    embed_dim: int | None = None
    """vq: code dimension (diffusers' vq_embed_dim; LlamaGen: 8); null: the latent channels. fsq: len(levels)."""
    beta: float = 0.25
    """Commitment weight (taming: 0.25)."""
    legacy_loss: bool = True
    """taming's (and diffusers') default, which LDM trained with: beta on the codebook term, 1 on the commitment."""
    ema_decay: float | None = None
    """VQ-VAE-2's EMA codebook updates with this decay (0.99); null: the codebook trains by its loss."""
    kmeans_init: bool = False
    """Initialise the codebook by k-means on the first accumulated batch's encoder outputs."""
    kmeans_iters: int = 10
    """Lloyd iterations of that k-means."""
    restart_threshold: float = 0.0
    """Codes whose EMA use count falls below this are restarted from recent encoder outputs (Jukebox: 1.0); 0: off."""
    usage_decay: float = 0.99
    """Decay of each code's EMA use count (restarts and the diagnostics read it)."""
    levels: list[int] | None = None
    """fsq: levels per dimension (Mentzer et al.: [8, 5, 5, 5] for 1000 codes, [8, 8, 8, 5, 5, 5] for 64,000)."""
    fsq_bound_weight: float = 1.0
    """fsq: weight of mean(relu(|z| - 1)^2), which keeps the latents inside the grid."""

    def __post_init__(self) -> None:
        if self.kind == "fsq":
            if not self.levels or any(level < 2 for level in self.levels):
                raise ConfigError("model.autoencoder.quantizer.levels: fsq needs levels >= 2 per dimension, e.g. [8, 5, 5, 5]")
            if math.prod(self.levels) > FSQ_MAX_CODES:
                raise ConfigError(
                    f"model.autoencoder.quantizer.levels {list(self.levels)}: {math.prod(self.levels)} codes, over the {FSQ_MAX_CODES} "
                    "an exported VQModel's codebook is written out with; use fewer levels"
                )
            if self.ema_decay is not None or self.kmeans_init or self.restart_threshold > 0:
                raise ConfigError("model.autoencoder.quantizer: ema_decay, kmeans_init and restart_threshold are vq's; fsq's grid is fixed")
        elif self.levels is not None:
            raise ConfigError("model.autoencoder.quantizer.levels applies to kind: fsq only")
        if self.codebook_size < 2 and self.kind == "vq":
            raise ConfigError(f"model.autoencoder.quantizer.codebook_size must be >= 2, got {self.codebook_size}")
        if self.embed_dim is not None and self.embed_dim < 1:
            raise ConfigError(f"model.autoencoder.quantizer.embed_dim must be >= 1 (or null: the latent channels), got {self.embed_dim}")
        if self.ema_decay is not None and not 0.0 < self.ema_decay < 1.0:
            raise ConfigError(f"model.autoencoder.quantizer.ema_decay must be in (0, 1), got {self.ema_decay}")

    @property
    def size(self) -> int:
        return math.prod(self.levels) if self.kind == "fsq" else self.codebook_size

    def dim(self, latent_channels: int) -> int:
        return len(self.levels) if self.kind == "fsq" else self.embed_dim or latent_channels


def fsq_grid(levels: list[int]) -> torch.Tensor:
    """(prod(levels), len(levels)): every point of the level grid, row i = the mixed-radix digits of i
    (first dimension slowest), each digit k of L mapped to 2k/(L-1) - 1."""
    axes = [torch.linspace(-1.0, 1.0, level) for level in levels]
    return torch.cartesian_prod(*axes).reshape(-1, len(levels))


def fsq_indices(flat: torch.Tensor, levels: list[int]) -> torch.Tensor:
    """The grid row nearest to each row of `flat`: per-dimension rounding, digits combined in `fsq_grid`'s order."""
    index = torch.zeros(flat.shape[0], dtype=torch.long, device=flat.device)
    for d, level in enumerate(levels):
        digit = torch.round((flat[:, d].clamp(-1, 1) + 1) * (level - 1) / 2).long()
        index = index * level + digit
    return index


@dataclass
class Quantized:
    """One lookup: the latents the decoder reads (`z + (z_q - z).detach()`, NCHW), the encoder outputs and
    their codes as rows (N, d), and the code indices (N,)."""

    latents: torch.Tensor
    inputs: torch.Tensor
    codes: torch.Tensor
    indices: torch.Tensor


def lookup(weight: torch.Tensor, h: torch.Tensor, levels: list[int] | None = None) -> Quantized:
    """Diffusers' VectorQuantizer's lookup of latents `h` (B, d, H, W): the `torch.cdist` argmin (FSQ: the
    same nearest row by rounding) and its straight-through expression, in fp32."""
    with torch.autocast(h.device.type, enabled=False):
        z = h.float().permute(0, 2, 3, 1).contiguous()
        flat = z.view(-1, z.shape[-1])
        codebook = full(weight).float()
        indices = fsq_indices(flat, levels) if levels else torch.argmin(torch.cdist(flat, codebook), dim=1)
        z_q = F.embedding(indices, codebook).view(z.shape)
        latents = (z + (z_q - z).detach()).permute(0, 3, 1, 2).contiguous()
    return Quantized(latents, flat, z_q.view(flat.shape), indices)


def code_indices(weight: torch.Tensor, h: torch.Tensor, levels: list[int] | None = None, chunk: int = 4096) -> torch.Tensor:
    """(B, H*W) code indices of latents `h` in raster order, without a graph (bounded memory)."""
    with torch.no_grad():
        flat = h.float().permute(0, 2, 3, 1).reshape(-1, h.shape[1])
        codebook = full(weight).float()
        parts = [fsq_indices(p, levels) if levels else torch.argmin(torch.cdist(p, codebook), dim=1) for p in flat.split(chunk)]
    return torch.cat(parts).view(h.shape[0], -1)


def full(weight: torch.Tensor) -> torch.Tensor:
    """The whole codebook: gathered (differentiably) when FSDP2 shards it, else the tensor itself."""
    return weight.full_tensor() if isinstance(weight, DTensor) else weight


@torch.no_grad()
def assign(weight: torch.Tensor, value: torch.Tensor, rows: torch.Tensor | None = None) -> None:
    """Sets the codebook (or its `rows`) to `value`, computed alike on every process; under FSDP2 each
    process keeps its own shard of the result."""
    if isinstance(weight, DTensor):
        whole = full(weight).clone()
        whole[rows if rows is not None else slice(None)] = value.to(whole.dtype)
        weight.to_local().copy_(distribute_tensor(whole, weight.device_mesh, weight.placements).to_local())
    elif rows is not None:
        weight.data[rows] = value.to(weight.dtype)
    else:
        weight.data.copy_(value)
