"""LTX-Video's denoising decoder (HaCohen et al. 2024, "LTX-Video: Realtime Video Latent Diffusion", arXiv
2501.00103, section 2.1: the VAE decoder performs the last denoising step, conditioned on the timestep):
its settings (`model.loss.denoising_decoder`) and the noising formula. The unit that draws and applies it is
`training/features/denoising_decoder.py`.

The formula is the one LTX-Video's pipelines apply before the decoder (Lightricks/LTX-Video,
ltx_video/pipelines/pipeline_ltx_video.py, `LTXVideoPipeline.__call__`; diffusers' `LTXPipeline.__call__`),
with the noise scale equal to the timestep (their default when `decode_noise_scale` is None):

    z_t = (1 - t) z + t eps,  eps ~ N(0, I),  decoded as decoder(z_t, temb=t)

on the raw latent z, as diffusers' `LTXPipeline` (the pipeline the export is for) mixes it after
`_denormalize_latents`. Lightricks' own pipeline mixes it into the normalised latent before `vae_decode`
un-normalises it (vae_encode.py, `_run_decoder` -> `un_normalize_latents`): the same while a model trains from
scratch (its `latents_mean` / `latents_std` buffers stay 0 / 1 until the export measures them); for a
fine-tune of a released model the noise here is t eps in raw units, not t eps latents_std.

The decoder's side is LTX-Video's `Decoder.forward` (ltx_video/models/autoencoders/causal_video_autoencoder.py:
the timestep times the learned `timestep_scale_multiplier`, embedded, shifts and scales the features of the
mid blocks and, through `last_time_embedder` / `last_scale_shift_table`, the output; `ResnetBlock3D.
_feed_spatial_noise` is the separate per-block noise input), which diffusers' `LTXVideoDecoder3d` ports.

Training draws t ~ U(0, max_timestep) independently per sample (one value per clip, for all its latent
frames) and decodes z_t conditioned on t, so the decoder learns the last denoising step at the low noise
levels a diffusion model leaves. Lightricks' training code is not published; the range (up to 0.2, the
presets' value) is the report's as summaries of it give it (its text was not reachable when this was
written), the uniform per-sample draw is this project's choice, and the noise scale equals t as in the
pipeline's default (Lightricks' configs decode at timestep 0.05 with noise scale 0.025: a smaller scale at
inference than in training is theirs to choose at the pipeline call).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from vaetrain.errors import ConfigError


@dataclass(frozen=True)
class DenoisingDecoderConfig:
    """`model.loss.denoising_decoder`: the ltx family's timestep-conditioned decoder (`architecture.timestep_conditioning`)."""

    max_timestep: float = 0.0
    """Training noises the latent to z_t = (1 - t) z + t eps, t ~ U(0, max_timestep) per clip, and conditions the
    decoder on t (LTX-Video's report: 0.2); 0: no noise, the decoder trained at `decode_timestep`."""
    decode_timestep: float = 0.05
    """The timestep validation, `eval`, `recon` and the export decode at (no noise added), recorded in the
    exported config as `_decode_timestep` for `LTXPipeline(..., decode_timestep=...)` (Lightricks: 0.05)."""

    def __post_init__(self) -> None:
        for name in ("max_timestep", "decode_timestep"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"model.loss.denoising_decoder.{name} must be in [0, 1], got {getattr(self, name)}")


def draw_timesteps(batch: int, max_timestep: float, device: torch.device | str) -> torch.Tensor:
    """t ~ U(0, max_timestep), one per sample (from the global generator, whose state checkpoints keep)."""
    return torch.rand(batch, device=device) * max_timestep


def noised_latents(latents: torch.Tensor, timesteps: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """z_t = (1 - t) z + t eps per sample (t: (batch,)), the pipeline's `latents * (1 - decode_noise_scale) +
    noise * decode_noise_scale`."""
    t = timesteps.to(latents.dtype).view(-1, *(1,) * (latents.ndim - 1))
    return (1 - t) * latents + t * noise
