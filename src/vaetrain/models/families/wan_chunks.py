"""AutoencoderKLWan one causal chunk at a time (`WanChunks`), so a video of any length streams through it.

diffusers' `_encode` reads a clip's first frame, then chunks of 4 frames, through the encoder's feature
caches (`feat_cache`: the last frames each causal convolution saw); `_decode` reads one latent frame at a
time through the decoder's. Both keep the caches only for the length of one call on a whole clip. Here the
caches live between calls, so the caller feeds chunks as they are read and gets latents and frames as they
are computed: the same calls on the same tensors in the same order as diffusers' one-pass `encode` and
`decode`, hence the same numbers, with memory bound by one chunk and the caches (2 frames per causal
convolution), not by the clip.

Spatial tiling (`model.use_tiling` with its `tile_sample_*` sizes, as diffusers' `tiled_encode` /
`tiled_decode`): every tile keeps caches of its own, and the tiles of each chunk are blended as diffusers
blends them (the blend is per frame, so blending chunk by chunk equals blending the clip).
"""

from __future__ import annotations

import torch
from torch import nn


class WanChunks:
    """A stream through one AutoencoderKLWan: `encode(chunk)` with the first frame first, then 4 frames at a
    time (B, C, T, H, W in [-1, 1], sides divisible by the downsampling factor) -> the posterior's moments
    (B, 2 z, t, h, w: mean, then log-variance, as `quant_conv` gives them); `decode(latents)` of one or more
    latent frames in order -> their frames, clamped to [-1, 1]. Encoder and decoder streams are independent."""

    def __init__(self, model: nn.Module) -> None:
        from diffusers.models.autoencoders.autoencoder_kl_wan import WanCausalConv3d

        self.model = model
        self.counts = {part: sum(isinstance(m, WanCausalConv3d) for m in getattr(model, part).modules()) for part in ("encoder", "decoder")}
        self.caches: dict[str, dict[tuple[int, int], list]] = {"encoder": {}, "decoder": {}}
        self.decoded = 0  # latent frames decoded so far (the first is decoded with `first_chunk`)

    def _cache(self, part: str, tile: tuple[int, int]) -> list:
        return self.caches[part].setdefault(tile, [None] * self.counts[part])

    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        """`_encode` / `tiled_encode` of one chunk (the first call: the first frame alone)."""
        from diffusers.models.autoencoders.autoencoder_kl_wan import patchify

        model, patch = self.model, self.model.config.patch_size
        height, width = frames.shape[-2:]
        x = patchify(frames, patch_size=patch) if patch is not None else frames
        if not (model.use_tiling and (width > model.tile_sample_min_width or height > model.tile_sample_min_height)):
            return model.quant_conv(model.encoder(x, feat_cache=self._cache("encoder", (0, 0)), feat_idx=[0]))
        ratio = model.spatial_compression_ratio // (patch or 1)
        latent = (model.tile_sample_min_height // ratio, model.tile_sample_min_width // ratio)
        stride = (model.tile_sample_stride_height // ratio, model.tile_sample_stride_width // ratio)
        height, width = x.shape[-2:]
        rows = [
            [
                model.quant_conv(
                    model.encoder(
                        x[..., i : i + model.tile_sample_min_height, j : j + model.tile_sample_min_width],
                        feat_cache=self._cache("encoder", (i, j)),
                        feat_idx=[0],
                    )
                )
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
        if not (model.use_tiling and (width > latent[1] or height > latent[0])):
            out = model.decoder(model.post_quant_conv(z), feat_cache=self._cache("decoder", (0, 0)), feat_idx=[0], first_chunk=first)
        else:
            stride = (model.tile_sample_stride_height // ratio, model.tile_sample_stride_width // ratio)
            sample_stride = (model.tile_sample_stride_height // (patch or 1), model.tile_sample_stride_width // (patch or 1))
            blend = (model.tile_sample_min_height // (patch or 1) - sample_stride[0], model.tile_sample_min_width // (patch or 1) - sample_stride[1])
            rows = [
                [
                    model.decoder(
                        model.post_quant_conv(z[..., i : i + latent[0], j : j + latent[1]]),
                        feat_cache=self._cache("decoder", (i, j)),
                        feat_idx=[0],
                        first_chunk=first,
                    )
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
