"""The callback that ends `fit` with a diffusers folder of the run's autoencoder."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import lightning as L

from vaetrain.export.diffusers_folder import export_model, keeps_normalisation
from vaetrain.export.model_card import CardFacts
from vaetrain.models.autoencoder import autoencoder_from_state
from vaetrain.models.latent_space import LatentConvention


class ExportDiffusers(L.Callback):
    """At the end of `fit`, writes RUN/<dirname> as a diffusers folder (EMA weights when EMA is on), with
    the latent normalisation measured on up to `latent_statistics_images` training images: the same export
    `vaetrain export` makes of the final checkpoint. A decoder-only fine-tune of a pretrained model keeps
    its normalisation (the latent space is unchanged), unless `latents` names a convention to measure.

    Args:
        dirname: Folder under the run's root directory.
        latent_statistics_images: Training images the latent normalisation is measured on.
        enabled: False: no export at the end of fit.
        latents: Latent normalisation convention the export writes: scale_shift (SD/SD3/FLUX: scaling_factor and
            shift_factor) or per_channel (SDXL-style latents_mean/latents_std, AutoencoderKL only); null: the
            architecture's default (see vaetrain.models.latent_space).
    """

    def __init__(self, dirname: str = "diffusers", latent_statistics_images: int = 256, enabled: bool = True, latents: LatentConvention | None = None) -> None:
        self.dirname = dirname
        self.latent_statistics_images = latent_statistics_images
        self.enabled = enabled
        self.latents = latents
        self.path: Path | None = None

    def on_fit_end(self, trainer: L.Trainer, pl_module) -> None:
        if not self.enabled:
            return
        weights = pl_module.full_inference_state_dict()  # on every process: under FSDP it gathers the shards
        if not trainer.is_global_zero:
            return
        model = autoencoder_from_state(pl_module.autoencoder.config, weights).to(pl_module.device)
        datamodule = trainer.datamodule
        images = datamodule.describe() if hasattr(datamodule, "describe") else None
        validation = datamodule.describe_validation() if hasattr(datamodule, "describe_validation") else None
        settings = {name: asdict(getattr(pl_module, f"{name}_config")) for name in ("autoencoder", "loss")}
        facts = CardFacts(steps=pl_module.counters.generator_steps, settings=settings, training_images=images)
        measured = None if keeps_normalisation(settings, self.latents) else images
        out = Path(trainer.default_root_dir) / self.dirname
        state = pl_module.state_dict() if getattr(pl_module, "diffusion_ema", None) is not None else None  # end-to-end tuning's SiT
        self.path = export_model(
            model, out, measured, part="train", max_images=self.latent_statistics_images, validation=validation, facts=facts, latents=self.latents, state=state
        )
