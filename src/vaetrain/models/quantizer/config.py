"""The `vq` family's quantiser settings (`model.autoencoder.quantizer`)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

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
