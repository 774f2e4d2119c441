"""AutoencoderKLLTXVideo (LTX-Video's VAE, arXiv 2501.00103): patchify (4x4 pixels into channels), causal 3D
convolutions in the encoder, a non-causal decoder, a diagonal Gaussian posterior whose log-variance is one
channel shared by all 128 (`LTXVideoEncoder3d.forward` repeats it), clips of 1 + 8k frames in, 1 + k latent
frames out (8x in time, 32x in space in the released models). The encoder reads a clip in one pass (no
feature caches), so `frame_chunk` is the temporal compression: the first frame alone, then chunks of 8.

Its pipelines read the latent normalisation from the model's *buffers* `latents_mean` / `latents_std` and
its config's `scaling_factor` (`LTXPipeline._normalize_latents`: (z - latents_mean) * scaling_factor /
latents_std): `normalisation` / `set_latent_fields` read and write those, so the export's per-channel
statistics land where `LTXPipeline` looks.

A decoder with `timestep_conditioning` (LTX-Video 0.9.1 and later) is conditioned on a diffusion timestep
(`LTXVideoDecoder3d.forward`: the timestep times `timestep_scale_multiplier`, embedded, shifts and scales
the normalised features of the mid block, every up block and the output); `LTXPipeline.__call__` passes
`decode_timestep` (a call argument; Lightricks' configs/ltxv-2b-0.9.1.yaml: 0.05). This family decodes at the
timestep the model's config records as `_decode_timestep` (written by the training unit
`training/features/denoising_decoder.py`, kept by diffusers' `from_config` and `save_pretrained` as a
private key, so no warning at load), else at `DEFAULT_DECODE_TIMESTEP`. diffusers' `decoder_inject_noise`
(StyleGAN's per-pixel noise inputs with learned per-channel scales, `LTXVideoResnetBlock3d`) draws fresh
noise at every decode, in the pipeline too: it is architecture, not a training setting.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from vaetrain.errors import ConfigError
from vaetrain.models.families.base import CausalConvEnds, Family, windowed_coder_calls
from vaetrain.models.families.kl import KLFamily

DEFAULT_DECODE_TIMESTEP = 0.05
"""Lightricks' `decode_timestep` for the timestep-conditioned VAEs (LTX-Video configs/ltxv-2b-0.9.1.yaml)."""
DECODE_TIMESTEP_KEY = "_decode_timestep"


class LTXVideoFamily(CausalConvEnds, KLFamily):
    """AutoencoderKL's posterior and encoder modules; its own build, layout, normalisation and decoder input."""

    name = "ltx"
    class_name = "AutoencoderKLLTXVideo"
    video = True
    latent_conventions = ("per_channel",)

    def build(self, config) -> nn.Module:
        """LTX-Video 0.9.0's layout at the configured widths: one down block per entry of `block_out_channels`,
        each but the last halving time and space, `layers_per_block` residual blocks in each and in the middle
        block; the decoder mirrors it. Any of diffusers' fields (`patch_size`, `decoder_block_out_channels`,
        `timestep_conditioning`, per-level `layers_per_block` lists, ...) via `architecture`."""
        from diffusers import AutoencoderKLLTXVideo

        architecture = dict(config.architecture or {})
        levels = len(config.block_out_channels)
        if config.layers_per_block != 2 and "layers_per_block" in architecture:
            raise ConfigError("model.autoencoder.layers_per_block and architecture.layers_per_block both set: give one")
        scaling = (True,) * (levels - 1) + (False,)
        fields: dict[str, Any] = dict(
            in_channels=config.in_channels,
            out_channels=config.out_channels,
            latent_channels=config.latent_channels,
            block_out_channels=tuple(config.block_out_channels),
            decoder_block_out_channels=tuple(config.block_out_channels),
            layers_per_block=(config.layers_per_block,) * (levels + 1),
            decoder_layers_per_block=(config.layers_per_block,) * (levels + 1),
            spatio_temporal_scaling=scaling,
            decoder_spatio_temporal_scaling=scaling,
            decoder_inject_noise=(False,) * (levels + 1),
        )
        model = AutoencoderKLLTXVideo(**(fields | architecture))
        if model.config.timestep_conditioning and any(block.conv_in is not None for block in model.decoder.up_blocks):
            # diffusers' LTXVideoUpBlock3d hands the raw timestep to a width-changing conv_in: it cannot run
            raise ConfigError(
                "a timestep-conditioned decoder needs up blocks that keep their width (LTX-Video 0.9.1: "
                "decoder_block_out_channels doubling per level with upsample_factor 2 and upsample_residual true)"
            )
        return model

    def decode(self, model, latents) -> torch.Tensor:
        """At the model's decode timestep (see the module docstring), without noise: what it reconstructs."""
        return self.decode_at(model, latents, decode_timestep(model))

    def decode_at(self, model, latents: torch.Tensor, timestep: float | torch.Tensor | None) -> torch.Tensor:
        """`model.decode(latents, temb)` with the timestep as diffusers' decoder reads it ((batch,) values in
        [0, 1]); a decoder without timestep conditioning ignores it."""
        if not model.config.timestep_conditioning:
            return model.decode(latents).sample
        if not torch.is_tensor(timestep):
            timestep = torch.full((latents.shape[0],), float(timestep), device=latents.device)
        return model.decode(latents, timestep.to(latents.device, latents.dtype)).sample

    def normalisation(self, model) -> dict[str, Any]:
        """`scaling_factor` from the config, `latents_mean` / `latents_std` from the buffers the pipeline reads."""
        return {"scaling_factor": model.config.scaling_factor, "latents_mean": model.latents_mean.tolist(), "latents_std": model.latents_std.tolist()}

    def set_latent_fields(self, model, fields: dict[str, Any]) -> None:
        """The `latents_mean` / `latents_std` buffers `LTXPipeline` reads, and `scaling_factor` in the config."""
        with torch.no_grad():
            for name in ("latents_mean", "latents_std"):
                if fields.get(name) is not None:
                    getattr(model, name).copy_(torch.tensor(fields[name], dtype=getattr(model, name).dtype))
        if "scaling_factor" in fields:
            model.register_to_config(scaling_factor=fields["scaling_factor"])

    def normalise_code(self, model) -> str | None:
        lines = [
            "mean, std = (b.view(1, -1, 1, 1, 1) for b in (vae.latents_mean, vae.latents_std))",
            "latents = (latents - mean) * vae.config.scaling_factor / std  # LTXPipeline._normalize_latents",
        ]
        if model.config.timestep_conditioning:
            lines.append(f"# LTXPipeline.from_pretrained(..., vae=vae)(prompt, decode_timestep={decode_timestep(model)})  # the timestep it decodes at")
        return "\n".join(lines)

    def encoder_modules(self, model) -> list[nn.Module]:
        return [model.encoder]  # no quant_conv

    def shard_units(self, model) -> list[nn.Module]:
        return Family.shard_units(self, model)

    def last_layer_output_gradient(self, model, grad: torch.Tensor) -> torch.Tensor:
        """The inverse of `LTXVideoDecoder3d.forward`'s un-patchify (a pure rearrangement, so it maps gradients
        too): (B, C, F p_t, H p, W p) -> (B, C p_t p p, F, H, W), the channel order (C, p_t, p, p) it reads."""
        p, pt = model.config.patch_size, model.config.patch_size_t
        b, c, f, h, w = grad.shape
        grad = grad.reshape(b, c, f // pt, pt, h // p, p, w // p, p)  # (B, C, F, p_t, H, p_h, W, p_w)
        return grad.permute(0, 1, 3, 7, 5, 2, 4, 6).reshape(b, c * pt * p * p, f // pt, h // p, w // p)

    def downsampling_factor(self, model) -> int:
        return model.spatial_compression_ratio

    def temporal_factor(self, model) -> int:
        return model.temporal_compression_ratio

    def describe(self, model) -> str:
        config = model.config
        conditioned = f", decoder conditioned on the timestep (decode_timestep {decode_timestep(model)})" if config.timestep_conditioning else ""
        return (
            f"AutoencoderKLLTXVideo, block_out_channels {list(config.block_out_channels)}, decoder {list(config.decoder_block_out_channels)}, "
            f"patch_size {config.patch_size}, {self.temporal_factor(model)}x temporal / {self.downsampling_factor(model)}x spatial compression{conditioned}"
        )

    def coder_calls(self, model, shape) -> int | None:
        """Encoder and decoder once per spatial tile, per temporal window when diffusers' frame-wise tiling is on
        (off by default for this class) and the clip is longer than `tile_sample_min_num_frames`."""
        return windowed_coder_calls(model, shape, model.use_framewise_decoding)  # diffusers' `_encode` reads this flag


def decode_timestep(model: nn.Module) -> float:
    """The timestep the model decodes at: its config's `_decode_timestep`, else `DEFAULT_DECODE_TIMESTEP`."""
    value = model.config.get(DECODE_TIMESTEP_KEY)
    return DEFAULT_DECODE_TIMESTEP if value is None else float(value)


def set_decode_timestep(model: nn.Module, value: float) -> None:
    model.register_to_config(**{DECODE_TIMESTEP_KEY: float(value)})
