"""LTX-Video's denoising decoder as a unit (`model.loss.denoising_decoder`; the formula and its sources are in
`losses.denoising_decoder`): each training forward draws t ~ U(0, max_timestep) per clip, noises the latent
the decoder reads to (1 - t) z + t eps and decodes it conditioned on t. Validation, `eval`, `recon` and the
export decode through the family at `decode_timestep` without noise (`models/families/ltx.py`): the unit
records that value in the autoencoder's config (and its EMA copy's), which the checkpoint and the export
carry. Active for every ltx model whose decoder is timestep-conditioned; a non-default block elsewhere is
refused in one line."""

from __future__ import annotations

import torch
from torch import nn

from vaetrain.errors import ConfigError
from vaetrain.losses.denoising_decoder import DenoisingDecoderConfig, draw_timesteps, noised_latents
from vaetrain.models.families import family_of
from vaetrain.models.families.ltx import set_decode_timestep
from vaetrain.training.features.base import Feature, Latents, Setup


class DenoisingDecoder(Feature):
    name = "denoising_decoder"

    @classmethod
    def wanted(cls, setup: Setup, autoencoder: nn.Module) -> bool:
        """Every timestep-conditioned ltx model; a non-default block for any other model is refused here, in
        one line before any unit builds (the refusal reads the built model's config, which `conflicts` cannot)."""
        if conditioned(autoencoder):
            return True
        if setup.loss.denoising_decoder != DenoisingDecoderConfig():
            family = family_of(autoencoder).name
            need = "architecture.timestep_conditioning: true" if family == "ltx" else f"the ltx family; the autoencoder is {family}"
            raise ConfigError(f"model.loss.denoising_decoder needs a timestep-conditioned decoder (model.autoencoder.{need})")
        return False

    def build(self, holder: nn.Module, autoencoder: nn.Module) -> None:
        super().build(holder, autoencoder)
        ema = getattr(holder, "ema", None)
        for model in (autoencoder, getattr(ema, "module", None)):
            if model is not None and conditioned(model):
                set_decode_timestep(model, self.setup.loss.denoising_decoder.decode_timestep)

    def decode(self, forward, stage: Latents) -> torch.Tensor | None:
        """The decoder's training input and condition (the step's generator and discriminator forwards alike)."""
        model, max_timestep = forward.networks.autoencoder, self.setup.loss.denoising_decoder.max_timestep
        if max_timestep == 0:
            return None  # the family's decode: at decode_timestep, no noise
        latents = stage.latents
        timesteps = draw_timesteps(latents.shape[0], max_timestep, latents.device)
        noisy = noised_latents(latents, timesteps, torch.randn_like(latents))
        return forward.family.decode_at(model, noisy, timesteps)


def conditioned(autoencoder: nn.Module) -> bool:
    """An ltx model whose decoder reads a timestep."""
    return family_of(autoencoder).name == "ltx" and bool(autoencoder.config.timestep_conditioning)
