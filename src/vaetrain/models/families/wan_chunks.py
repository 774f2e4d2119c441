"""AutoencoderKLWan's encode and decode with activation checkpointing per causal chunk.

diffusers' `AutoencoderKLWan._encode` runs its encoder on the first frame, then on chunks of 4 frames, and
`_decode` runs its decoder once per latent frame; each call reads and overwrites a list of feature caches
(`feat_cache`: per causal convolution, the last frames of its input in the previous chunk) and a counter
(`feat_idx`), both mutated in place. `torch.utils.checkpoint` of such a call would recompute, in backward,
with the caches as a later chunk left them. Here each chunk is a function of (frames, caches in) ->
(output, caches out): it copies the list it is given and returns the copy diffusers' blocks filled, so the
caches are explicit inputs and outputs, the list a checkpointed chunk recomputes from is the one it first
ran on, and the gradient reaches the previous chunks through the cached frames (diffusers clones every
cached slice, so no chunk writes into another's tensors). The loop, patchify, `quant_conv`,
`post_quant_conv`, the clamp and batch slicing are diffusers' own (`_encode`, `_decode`, `encode`,
`decode`, diffusers 0.42); each chunk runs under `torch.utils.checkpoint.checkpoint(use_reentrant=False)`.

Recomputation runs the chunk's forward hooks again: `recomputing()` says when, so the layers that record a
forward's inputs (`models.last_layers`) record only the first. Spatial tiling is not checkpointed: a clip
whose frames exceed the model's tile while tiling is on is refused in one line.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager, nullcontext

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from vaetrain.errors import ConfigError

_state = threading.local()


def recomputing() -> bool:
    """True while a checkpointed chunk is being recomputed in backward (in this thread)."""
    return getattr(_state, "depth", 0) > 0


@contextmanager
def _recomputation():
    _state.depth = getattr(_state, "depth", 0) + 1
    try:
        yield
    finally:
        _state.depth -= 1


def _contexts():
    """`checkpoint`'s context_fn: nothing around the first forward, `recomputing()` around the recomputation."""
    return nullcontext(), _recomputation()


def _chunk(coder: nn.Module, frames: torch.Tensor, caches: list, first_chunk: bool | None) -> tuple[torch.Tensor, list]:
    caches = list(caches)  # the caller's list stays as it was: a recomputation starts from the same caches
    extra = {} if first_chunk is None else {"first_chunk": first_chunk}
    return coder(frames, feat_cache=caches, feat_idx=[0], **extra), caches


def _run(coder: nn.Module, frames: torch.Tensor, caches: list, first_chunk: bool | None = None) -> tuple[torch.Tensor, list]:
    return checkpoint(_chunk, coder, frames, caches, first_chunk, use_reentrant=False, context_fn=_contexts)


def _refuse_tiling(model: nn.Module, height: int, width: int) -> None:
    if model.use_tiling and (height > model.tile_sample_min_height or width > model.tile_sample_min_width):
        raise ConfigError(
            f"model.autoencoder.gradient_checkpointing: AutoencoderKLWan checkpoints untiled clips only; frames of {height}x{width} "
            f"exceed its tile ({model.tile_sample_min_height}x{model.tile_sample_min_width}) with tiling on (disable_tiling() to train)"
        )


def checkpointed_moments(model: nn.Module, clips: torch.Tensor) -> torch.Tensor:
    """`AutoencoderKLWan.encode`'s moments (mean and log-variance stacked in channels), chunk by chunk
    under activation checkpointing."""
    if model.use_slicing and clips.shape[0] > 1:
        return torch.cat([checkpointed_moments(model, clip) for clip in clips.split(1)])
    if model.config.patch_size is not None:
        from diffusers.models.autoencoders.autoencoder_kl_wan import patchify

        clips = patchify(clips, patch_size=model.config.patch_size)
    _refuse_tiling(model, *clips.shape[-2:])
    caches, outputs = [None] * model._cached_conv_counts["encoder"], []
    for start in range(0, 1 + (clips.shape[2] - 1) // 4):
        frames = clips[:, :, :1] if start == 0 else clips[:, :, 1 + 4 * (start - 1) : 1 + 4 * start]
        out, caches = _run(model.encoder, frames, caches)
        outputs.append(out)
    return model.quant_conv(torch.cat(outputs, 2))


def checkpointed_decode(model: nn.Module, latents: torch.Tensor) -> torch.Tensor:
    """`AutoencoderKLWan.decode(latents).sample`, latent frame by latent frame under activation checkpointing."""
    if model.use_slicing and latents.shape[0] > 1:
        return torch.cat([checkpointed_decode(model, latent) for latent in latents.split(1)])
    ratio = model.spatial_compression_ratio
    _refuse_tiling(model, latents.shape[-2] * ratio, latents.shape[-1] * ratio)
    x = model.post_quant_conv(latents)
    caches, outputs = [None] * model._cached_conv_counts["decoder"], []
    for index in range(x.shape[2]):
        out, caches = _run(model.decoder, x[:, :, index : index + 1], caches, first_chunk=True if index == 0 else False)
        outputs.append(out)
    out = torch.cat(outputs, 2)
    if model.config.patch_size is not None:
        from diffusers.models.autoencoders.autoencoder_kl_wan import unpatchify

        out = unpatchify(out, patch_size=model.config.patch_size)
    return torch.clamp(out, min=-1.0, max=1.0)
