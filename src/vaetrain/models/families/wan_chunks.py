"""AutoencoderKLWan one causal chunk at a time (`WanChunks`): the one loop behind streaming a video of any
length through the model (`evaluation.stream`) and activation checkpointing in training.

diffusers' `_encode` reads a clip's first frame, then chunks of 4 frames, through the encoder's feature
caches (`feat_cache`: per causal convolution, the last frames it saw); `_decode` reads one latent frame at a
time through the decoder's. Both keep the caches only for the length of one call on a whole clip, mutated in
place. Here the caches live between calls, so the caller feeds chunks as they come and gets latents and
frames as they are computed: the same calls on the same tensors in the same order as diffusers' one-pass
`encode` and `decode` (diffusers 0.42: `_encode`, `_decode`, `tiled_encode`, `tiled_decode`), hence the same
numbers, with memory bound by one chunk and the caches (2 frames per causal convolution), not by the clip.

Spatial tiling (`model.use_tiling` with its `tile_sample_*` sizes): every tile keeps caches of its own, and the
tiles of each chunk are blended as diffusers blends them (per frame, so blending chunk by chunk equals
blending the clip).

Checkpointed (`WanChunks(model, checkpointed=True)`, training with `gradient_checkpointing`): each chunk is a
function of (frames, caches in) -> (output, caches out) under `torch.utils.checkpoint.checkpoint(
use_reentrant=False)`: it copies the list it is given and returns the copy diffusers' blocks filled, so the
list a recomputed chunk starts from is the one it first ran on (a mutated list would hand it a later chunk's
caches), and the gradient reaches earlier chunks through the cached frames (diffusers clones every cached
slice, so no chunk writes into another's tensors). Recomputation runs the chunk's forward hooks again:
`recomputing()` says when, so the layers that record a forward's inputs (`models.last_layers`) record only the
first. Tiling is not checkpointed: such a clip is refused in one line.
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


class WanChunks:
    """A stream through one AutoencoderKLWan: `encode(chunk)` with the first frame first, then 4 frames at a
    time (B, C, T, H, W in [-1, 1], sides divisible by the downsampling factor) -> the posterior's moments
    (B, 2 z, t, h, w: mean, then log-variance, as `quant_conv` gives them); `decode(latents)` of one or more
    latent frames in order -> their frames, clamped to [-1, 1]. Encoder and decoder streams are independent."""

    def __init__(self, model: nn.Module, checkpointed: bool = False) -> None:
        self.model, self.checkpointed = model, checkpointed
        self.caches: dict[str, dict[tuple[int, int], list]] = {"encoder": {}, "decoder": {}}
        self.decoded = 0  # latent frames decoded so far (the first is decoded with `first_chunk`)
        self.encoded = 0  # frames encoded so far: the first alone, then 4 at a time

    def _call(self, part: str, tile: tuple[int, int], x: torch.Tensor, first_chunk: bool | None = None) -> torch.Tensor:
        """The encoder or decoder on one chunk of one tile, through (and updating) that tile's caches."""
        caches = self.caches[part].get(tile) or [None] * self.model._cached_conv_counts[part]
        coder = getattr(self.model, part)
        if self.checkpointed:
            out, caches = checkpoint(_chunk, coder, x, caches, first_chunk, use_reentrant=False, context_fn=_contexts)
        else:
            out = coder(x, feat_cache=caches, feat_idx=[0], **({} if first_chunk is None else {"first_chunk": first_chunk}))
        self.caches[part][tile] = caches
        return out

    def _tiled(self, height: int, width: int) -> bool:
        model = self.model
        tiled = model.use_tiling and (height > model.tile_sample_min_height or width > model.tile_sample_min_width)
        if tiled and self.checkpointed:
            raise ConfigError(
                f"model.autoencoder.gradient_checkpointing: AutoencoderKLWan checkpoints untiled clips only; frames of {height}x{width} "
                f"exceed its tile ({model.tile_sample_min_height}x{model.tile_sample_min_width}) with tiling on (disable_tiling() to train)"
            )
        return tiled

    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        """`_encode` / `tiled_encode` of one chunk (the first call: the first frame alone)."""
        from diffusers.models.autoencoders.autoencoder_kl_wan import patchify

        model, patch = self.model, self.model.config.patch_size
        expected = 1 if self.encoded == 0 else 4
        if frames.shape[2] != expected:
            raise ValueError(
                f"WanChunks.encode: got {frames.shape[2]} frames after {self.encoded}; AutoencoderKLWan encodes the first frame alone, then 4 at a time"
            )
        self.encoded += expected
        tiled = self._tiled(*frames.shape[-2:])
        x = patchify(frames, patch_size=patch) if patch is not None else frames
        if not tiled:
            return model.quant_conv(self._call("encoder", (0, 0), x))
        ratio = model.spatial_compression_ratio // (patch or 1)
        latent = (model.tile_sample_min_height // ratio, model.tile_sample_min_width // ratio)
        stride = (model.tile_sample_stride_height // ratio, model.tile_sample_stride_width // ratio)
        height, width = x.shape[-2:]
        rows = [
            [
                model.quant_conv(self._call("encoder", (i, j), x[..., i : i + model.tile_sample_min_height, j : j + model.tile_sample_min_width]))
                for j in range(0, width, model.tile_sample_stride_width)
            ]
            for i in range(0, height, model.tile_sample_stride_height)
        ]
        return _blend(model, rows, (latent[0] - stride[0], latent[1] - stride[1]), stride)[..., : height // ratio, : width // ratio]

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """`_decode` / `tiled_decode` of the next latent frames, one at a time."""
        return torch.cat([self._decode_one(latents[:, :, k : k + 1]) for k in range(latents.shape[2])], dim=2)

    def _decode_one(self, z: torch.Tensor) -> torch.Tensor:
        from diffusers.models.autoencoders.autoencoder_kl_wan import unpatchify

        model, patch = self.model, self.model.config.patch_size
        first, self.decoded = self.decoded == 0, self.decoded + 1
        ratio = model.spatial_compression_ratio
        height, width = z.shape[-2:]
        latent = (model.tile_sample_min_height // ratio, model.tile_sample_min_width // ratio)
        if not self._tiled(height * ratio, width * ratio):
            out = self._call("decoder", (0, 0), model.post_quant_conv(z), first_chunk=first)
        else:
            stride = (model.tile_sample_stride_height // ratio, model.tile_sample_stride_width // ratio)
            sample_stride = (model.tile_sample_stride_height // (patch or 1), model.tile_sample_stride_width // (patch or 1))
            blend = (model.tile_sample_min_height // (patch or 1) - sample_stride[0], model.tile_sample_min_width // (patch or 1) - sample_stride[1])
            rows = [
                [
                    self._call("decoder", (i, j), model.post_quant_conv(z[..., i : i + latent[0], j : j + latent[1]]), first_chunk=first)
                    for j in range(0, width, stride[1])
                ]
                for i in range(0, height, stride[0])
            ]
            out = _blend(model, rows, blend, sample_stride)[..., : height * ratio // (patch or 1), : width * ratio // (patch or 1)]
        if patch is not None:
            out = unpatchify(out, patch_size=patch)
        return out.clamp(-1.0, 1.0)


def _blend(model: nn.Module, rows: list[list[torch.Tensor]], blend: tuple[int, int], stride: tuple[int, int]) -> torch.Tensor:
    """diffusers' blending of overlapping tiles, in its order (each tile blended in place with the tile above
    and the one to its left, as already blended), then cut to the strides and joined."""
    joined = []
    for i, row in enumerate(rows):
        kept = []
        for j, tile in enumerate(row):
            if i > 0:
                tile = model.blend_v(rows[i - 1][j], tile, blend[0])
            if j > 0:
                tile = model.blend_h(row[j - 1], tile, blend[1])
            kept.append(tile[..., : stride[0], : stride[1]])
        joined.append(torch.cat(kept, dim=-1))
    return torch.cat(joined, dim=-2)


def checkpointed_moments(model: nn.Module, clips: torch.Tensor) -> torch.Tensor:
    """`AutoencoderKLWan.encode`'s moments (mean and log-variance stacked in channels), chunk by chunk
    under activation checkpointing."""
    if model.use_slicing and clips.shape[0] > 1:
        return torch.cat([checkpointed_moments(model, clip) for clip in clips.split(1)])
    stream = WanChunks(model, checkpointed=True)
    chunks = [clips[:, :, :1]] + [clips[:, :, start : start + 4] for start in range(1, 1 + 4 * ((clips.shape[2] - 1) // 4), 4)]
    return torch.cat([stream.encode(chunk) for chunk in chunks], dim=2)


def checkpointed_decode(model: nn.Module, latents: torch.Tensor) -> torch.Tensor:
    """`AutoencoderKLWan.decode(latents).sample`, latent frame by latent frame under activation checkpointing."""
    if model.use_slicing and latents.shape[0] > 1:
        return torch.cat([checkpointed_decode(model, latent) for latent in latents.split(1)])
    return WanChunks(model, checkpointed=True).decode(latents)
