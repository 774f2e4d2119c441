"""Sharding the networks for FSDP2 (`torch.distributed.fsdp.fully_shard`; the strategy is in
`training.strategies`). The module shards itself in `configure_model`: the autoencoder's blocks and halves
(`shard_autoencoder`), the discriminator and the EMA copy; the frozen LPIPS network is replicated. FSDP2
keeps each parameter (as a DTensor), runs on CPU with gloo, and lets the adaptive weight read the
decoder's last layer.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.distributed.fsdp import fully_shard
from torch.distributed.tensor import DTensor

from vaetrain.models.families import family_of


def is_sharded(module: nn.Module) -> bool:
    return any(isinstance(p, DTensor) for p in module.parameters())


def shard_autoencoder(autoencoder: nn.Module, mesh) -> None:
    """One FSDP unit per encoder/decoder block (parameters gathered only while the block runs) inside one
    root each for the encoder, the decoder and (AutoencoderKL) the two 1x1 convolutions: the family's
    `shard_units`. The autoencoder itself is not wrapped: training calls its `encode`/`decode`, whose
    outputs (a posterior object) would hide tensors from FSDP's backward hooks; its children are called
    through `forward` and return tensors. Roots reshard after forward too (FSDP2 keeps a root's weights
    gathered by default, which after an inference forward would leave the EMA copy unsharded beside the
    sharded weights it averages)."""
    for unit in family_of(autoencoder).shard_units(autoencoder):
        fully_shard(unit, mesh=mesh, reshard_after_forward=True)
    if any(not isinstance(p, DTensor) for p in autoencoder.parameters()):
        raise RuntimeError("shard_autoencoder: parameters outside the family's shard units")


def shard(module: nn.Module, mesh) -> None:
    fully_shard(module, mesh=mesh, reshard_after_forward=True)


def full_state_dict(module: nn.Module) -> dict[str, torch.Tensor]:
    """The complete weights on CPU: gathered from all processes when sharded (every process must call it),
    else the module's own state dict."""
    if not is_sharded(module):
        return {k: v.detach().cpu() for k, v in module.state_dict().items()}
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict  # 50 ms: only when sharded

    return get_model_state_dict(module, options=StateDictOptions(full_state_dict=True, cpu_offload=True, broadcast_from_rank0=False))
