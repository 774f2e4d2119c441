"""Metrics of clips over time: PSNR by latent chunk, the temporal drift, and flicker.

A causal video VAE (Wan, HunyuanVideo) reads a clip's first frame alone, then chunks of `chunk` frames (4),
each through feature caches the previous chunk left. A model trained on 1 + 4 frames has only seen the
caches of the first frame, so every chunk after the second is outside its training; the mean PSNR over
frames hides that, the per-chunk view shows it:

- chunk 1 is the first frame, chunk k >= 2 the frames 2 + 4(k-2) .. 1 + 4(k-1) (1-based: frames 2-5, 6-9,
  ...); a clip whose length is not 1 + 4k ends in a shorter last chunk;
- `psnr_chunks[k]`: the mean over every clip's frames in chunk k of the per-frame PSNR (the convention of
  `ReconstructionMetrics.psnr`: PSNR per frame, then averaged);
- `temporal_drift` = mean(psnr_chunks[3..end]) - psnr_chunks[2] in dB (1-based chunks: the plain mean of
  the chunks from the third on, minus the second chunk). Negative: later chunks reconstruct worse than the
  second, the first chunk with a cache. None for clips of fewer than three chunks (under 6 frames).
"""

from __future__ import annotations

import torch
from torch import nn
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from vaetrain.models.families import family_of

CAUSAL_CHUNK = 4
"""Frames per chunk after the first (diffusers' AutoencoderKLWan `_encode`; HunyuanVideo's 4x in time)."""


def frame_chunk_of(model: nn.Module) -> int:
    """The chunk a clip's PSNR is grouped by: the causal family's own; for an image model reading clips frame
    by frame, `CAUSAL_CHUNK`, so its figures line up with a video model's."""
    family = family_of(model)
    return family.frame_chunk(model) if family.video else CAUSAL_CHUNK


def chunk_index(length: int, chunk: int = CAUSAL_CHUNK, device: torch.device | str = "cpu") -> torch.Tensor:
    """The 0-based chunk of each of `length` frames: frame 0 -> 0, frames 1..chunk -> 1, and so on."""
    frames = torch.arange(length, device=device)
    return torch.where(frames == 0, 0, 1 + (frames - 1).clamp_min(0) // chunk)


def frame_psnr(target01: torch.Tensor, reconstruction01: torch.Tensor) -> torch.Tensor:
    """Per frame of clips (B, C, T, H, W) in [0, 1]: 10 log10(1 / MSE), shape (B, T)."""
    mse = (reconstruction01.double() - target01.double()).square().mean(dim=(1, 3, 4)).clamp_min(1e-20)
    return -10 * torch.log10(mse)


def temporal_drift(psnr_chunks: list[float]) -> float | None:
    """mean(chunks 3..end) - chunk 2 in dB (see the module docstring); None under three chunks."""
    if len(psnr_chunks) < 3:
        return None
    later = psnr_chunks[2:]
    return sum(later) / len(later) - psnr_chunks[1]


class ChunkPSNR(Metric):
    """The mean per-frame PSNR of each latent chunk over a set of clips. Each frame's (chunk, PSNR) is kept and
    gathered whole across processes (`cat`), so processes that saw different clip lengths, or none, sync."""

    full_state_update = False

    def __init__(self, chunk: int = CAUSAL_CHUNK, **kwargs) -> None:
        super().__init__(**kwargs)
        self.chunk = chunk
        self.add_state("chunks", default=[], dist_reduce_fx="cat")
        self.add_state("psnr", default=[], dist_reduce_fx="cat")

    def update(self, target01: torch.Tensor, reconstruction01: torch.Tensor) -> None:
        """Clips (B, C, T, H, W) in [0, 1]."""
        psnr = frame_psnr(target01, reconstruction01)
        self.chunks.append(chunk_index(psnr.shape[1], self.chunk, psnr.device).expand_as(psnr).reshape(-1))
        self.psnr.append(psnr.reshape(-1))

    def compute(self) -> list[float]:
        if len(self.psnr) == 0:  # a list before a sync, a tensor after
            return []
        chunks, psnr = dim_zero_cat(self.chunks).long(), dim_zero_cat(self.psnr).double()
        count = int(chunks.max()) + 1
        sums = torch.zeros(count, dtype=torch.float64, device=psnr.device).index_add_(0, chunks, psnr)
        return (sums / torch.bincount(chunks, minlength=count).double().clamp_min(1)).tolist()


def flicker(target01: torch.Tensor, reconstruction01: torch.Tensor) -> torch.Tensor:
    """Per clip (B, C, T, H, W in [0, 1]): the mean absolute difference between the reconstruction's and the
    original's frame-to-frame changes, in 8-bit levels (x 255): 0 when the reconstruction changes from frame
    to frame exactly as the original does, whatever its per-frame error; shimmering details raise it."""
    change = reconstruction01.diff(dim=2) - target01.diff(dim=2)
    return change.abs().mean(dim=(1, 2, 3, 4)) * 255
