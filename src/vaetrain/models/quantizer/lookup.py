"""The lookup diffusers' `VectorQuantizer` does, in training: nearest code (FSQ: rounding to the grid) and the
straight-through expression, so the exported `VQModel` quantises exactly as training did."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.distributed.tensor import DTensor, distribute_tensor


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
