"""AutoencoderKLHunyuanVideo (HunyuanVideo's VAE, also FramePack's): causal 3D convolutions with
replicate padding, a diagonal Gaussian posterior, clips of 1 + 4k frames, 4x in time and 8x in space,
16 channels. Its pipelines read a single `scaling_factor` (`latents * scaling_factor`, no shift).

Unlike Wan's, diffusers' class can run a clip through its encoder and decoder in one pass, and has
gradient checkpointing; its causal convolutions wrap an `nn.Conv3d` (`.conv`) that reads the padded input.
By default it tiles in time: above `tile_sample_min_num_frames` (16) frames it encodes overlapping windows of
17 frames, and above 16 // 4 = 4 latent frames it decodes overlapping windows of 5 latent frames, blended
linearly (`_temporal_tiled_encode` / `_temporal_tiled_decode`). A trained model runs in one pass instead
(`configure`): the decoder's last convolution then runs once on the whole clip, so LDM's adaptive weight
reads the gradient of the function trained, and the reconstruction is the clip's own, not a blend of windows.
A model read back for `recon`, `eval` or an export (`from_state`, `load`) keeps diffusers' tiling, which
bounds the memory of long clips without gradients.
"""

from __future__ import annotations

from torch import nn

from vaetrain.models.families.base import CausalConvEnds, windowed_coder_calls
from vaetrain.models.families.kl import KLFamily, ldm_stack


class HunyuanVideoFamily(CausalConvEnds, KLFamily):
    """AutoencoderKL's stack, posterior, width, encoder modules and FSDP units, in 3D blocks."""

    name = "hunyuan"
    class_name = "AutoencoderKLHunyuanVideo"
    video = True
    latent_conventions = ("scale_shift",)

    def build(self, config) -> nn.Module:
        from diffusers import AutoencoderKLHunyuanVideo

        stack = ldm_stack(config, "HunyuanVideoDownBlock3D", "HunyuanVideoUpBlock3D")
        return AutoencoderKLHunyuanVideo(**stack, spatial_compression_ratio=2 ** (len(config.block_out_channels) - 1), **(config.architecture or {}))

    def configure(self, model, config) -> None:
        """One pass while training (see the module docstring): the frame-wise tiling switched off on the model
        built or loaded for training, and so on its EMA copy (a deep copy), which validation reads."""
        model.use_framewise_encoding = model.use_framewise_decoding = False

    def downsampling_factor(self, model) -> int:
        return model.config.spatial_compression_ratio

    def temporal_factor(self, model) -> int:
        return model.config.temporal_compression_ratio

    def describe(self, model) -> str:
        config = model.config
        return (
            f"AutoencoderKLHunyuanVideo, block_out_channels {list(config.block_out_channels)}, layers_per_block {config.layers_per_block}, "
            f"{config.temporal_compression_ratio}x temporal / {config.spatial_compression_ratio}x spatial compression"
        )

    def coder_calls(self, model, shape) -> int | None:
        """Encoder and decoder once per spatial tile, per temporal tile when a clip is longer than
        `tile_sample_min_num_frames` (framewise, diffusers' default)."""
        return windowed_coder_calls(model, shape, model.use_framewise_encoding)
