"""The LightningModule: an adapter from Lightning's hooks to the one step (`training.step`), the training
units (`training.features`) and the run's plan (`vaetrain.plan`). It holds the networks (`training.networks`)
and hands each micro-batch to the `GanStep`; set-up, validation and logging are `run_setup`, `validation`
and `step_logs`. `trainer.global_step` counts generator steps only (the discriminator steps through the
strategy; which setting counts which steps: `training.step`)."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import nn

from vaetrain.checkpoints.schema import RunRecord
from vaetrain.evaluation.temporal import frame_chunk_of
from vaetrain.losses.config import LossConfig
from vaetrain.models.autoencoder import AutoencoderConfig
from vaetrain.models.discriminator import DiscriminatorConfig
from vaetrain.models.ema import EMAConfig
from vaetrain.models.families import family_of
from vaetrain.plan import RunPlan, StepCounters
from vaetrain.training.checkpoint import adopt_former_data_state, capture_rng, keep_frozen_networks_out, record_of, restore_rng
from vaetrain.training.config import GanOptimizers, SpeedConfig, StepSettings, TrainingConfig
from vaetrain.training.engines import LightningEngine
from vaetrain.training.features import Setup
from vaetrain.training.networks import build_networks, compile_networks, image_channels_of, in_layout, inference_weights, optimizer_names, shard_networks
from vaetrain.training.optim import gan_optimizers
from vaetrain.training.preflight import check_data, check_terms
from vaetrain.training.run_setup import set_up
from vaetrain.training.step import GanStep
from vaetrain.training.step_logs import StepLogs
from vaetrain.training.validation import ValidationConfig, ValidationMetrics, log_validation, validation_batch


class AutoencoderModule(L.LightningModule):
    """Trains an autoencoder of any family (+ PatchGAN) with reconstruction + LPIPS + KL + adversarial losses
    and the training units the settings switch on (`training.features`)."""

    def __init__(
        self,
        autoencoder: AutoencoderConfig = AutoencoderConfig(),
        discriminator: DiscriminatorConfig = DiscriminatorConfig(),
        loss: LossConfig = LossConfig(),
        optimizer: GanOptimizers = GanOptimizers(),
        ema: EMAConfig = EMAConfig(),
        training: TrainingConfig = TrainingConfig(),
        speed: SpeedConfig = SpeedConfig(),
        validation: ValidationConfig = ValidationConfig(),
        perceptual: nn.Module | None = None,
        inception: nn.Module | None = None,
        **networks: nn.Module | None,
    ) -> None:
        """Each block is a frozen config (shared defaults are safe). Injected networks (e.g. in tests): an LPIPS-like
        `perceptual` (images, images) -> distance, rFID's `inception`, and a unit's networks by the names it
        declares (`training.features`; else the unit builds or loads them from its settings)."""
        super().__init__()
        self.automatic_optimization = False
        self.autoencoder_config, self.discriminator_config, self.loss_config = autoencoder, discriminator, loss
        self.optimizer_config, self.ema_config, self.training_config = optimizer, ema, training
        self.speed_config, self.validation_config = speed, validation
        setup = Setup(autoencoder, discriminator, loss, ema, {"perceptual": perceptual} | networks)
        self.features = build_networks(self, setup)
        check_terms(setup, self.autoencoder)
        self.plan = RunPlan()  # the run's plan: set-up, then the memory budget, write it
        settings = StepSettings.from_configs(autoencoder, training, optimizer)
        self.gan_step = GanStep(self, loss, ema, settings, self.features, self.plan)  # after the EMA copy: its hook stays off it
        self.engine = LightningEngine(self)
        self.val_metrics = ValidationMetrics(
            validation, inception, family_of(self.autoencoder).token_usage(self.autoencoder), frame_chunk=frame_chunk_of(self.autoencoder)
        )
        self._pending_rng_state: dict[str, Any] | None = None
        self._step_logs = StepLogs()
        keep_frozen_networks_out(self)
        if speed.compile:
            compile_networks(self)

    @property
    def counters(self) -> StepCounters:
        return self.plan.counters

    @property
    def accumulate(self) -> int:
        return self.plan.accumulate

    def set_gradient_checkpointing(self, enabled: bool) -> None:
        """Recompute activations in backward (`Family.set_gradient_checkpointing`); the memory budget switches it for the run."""
        family_of(self.autoencoder).set_gradient_checkpointing(self.autoencoder, enabled)
        self.plan.gradient_checkpointing = enabled

    def inference_autoencoder(self) -> nn.Module:
        """The EMA weights once the EMA has been updated, else the trained weights."""
        return self.ema.module if self.ema is not None and int(self.ema.n_averaged) > 0 else self.autoencoder

    def full_inference_state_dict(self) -> dict[str, torch.Tensor]:
        """What the export writes (`networks.inference_weights`); under FSDP every process must call it."""
        return inference_weights(self, self.autoencoder_config.posterior == "fixed")

    def forward(self, images: torch.Tensor, *, with_latents: bool = False):
        """Deterministic reconstruction (posterior mode) with the inference weights (and the latents)."""
        model = self.inference_autoencoder()
        family = family_of(model)
        latents = family.encode(model, images).mode()
        reconstruction = family.decode(model, latents)
        return (reconstruction, latents) if with_latents else reconstruction

    def check_data(self, datamodule) -> None:
        """Fails early, in one line, when the images cannot be trained at their size or channel count (`preflight`)."""
        check_data(datamodule, self.autoencoder, image_channels_of(self.autoencoder), self.discriminator_config, self.loss_config, self.features)

    # Lightning's hooks
    def setup(self, stage: str) -> None:
        set_up(self)

    def configure_model(self) -> None:
        shard_networks(self, self.device_mesh)  # under fsdp2; other strategies leave the networks as they are

    def configure_optimizers(self):
        return gan_optimizers(self)

    def training_step(self, images: torch.Tensor, batch_idx: int) -> None:
        if self._pending_rng_state is not None:
            restore_rng(self._pending_rng_state)
            self._pending_rng_state = None
        images = in_layout(images, self.plan.channels_last)
        self._step_logs(self, self.gan_step(images, self.engine), images.shape[0])

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        """After the precision plugin unscaled the gradients: norms, skipping and clipping see true values."""
        index = next(i for i, o in enumerate(self.optimizers()) if o.optimizer is optimizer)
        self.gan_step.prepare_gradients(optimizer_names(self)[index])

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        self._rng_after_batch = capture_rng()  # what a checkpoint written now records

    def on_validation_start(self) -> None:
        self.val_metrics.use_pixels(getattr(getattr(self.trainer, "datamodule", None), "pixels", None))

    def on_validation_end(self) -> None:
        """Training goes on with the random state of its last batch's end: a run resumed from a checkpoint
        written there skips this validation, whose loader and steps draw random numbers (tests/training/
        test_module.py, "validating")."""
        if getattr(self, "_rng_after_batch", None) is not None:
            restore_rng(self._rng_after_batch)

    def validation_step(self, images: torch.Tensor, batch_idx: int) -> None:
        validation_batch(self, images)

    def on_validation_epoch_end(self) -> None:
        log_validation(self)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        record = record_of(self, getattr(self.trainer, "datamodule", None))
        if self.trainer.validating and getattr(self, "_rng_after_batch", None) is not None:
            record.rng = self._rng_after_batch  # saved at validation's end: training goes on from its batch's state
        record.write_into(checkpoint)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        record = RunRecord.read_from(checkpoint)
        self.plan.resume(record.counters, record.plan)
        self._pending_rng_state = record.rng
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if datamodule is not None and hasattr(datamodule, "set_start_sample"):
            datamodule.set_start_sample(record.counters.samples_seen)
        adopt_former_data_state(checkpoint, datamodule)  # before Lightning restores the data module
