"""The LightningModule: builds the networks, hands each micro-batch to the `GanStep`, logs, validates and
writes the checkpoint record. The update itself lives in `training/step.py`.

Step counting. Lightning's `global_step` would count every `optimizer.step()` of both optimizers, so the
discriminator steps through the strategy directly and `trainer.global_step` counts generator steps only.
Settings say which counter they use:
- generator steps (`generator_steps` == `trainer.global_step`): `trainer.max_steps`,
  `loss.disc_start_step`, `ema.*`, the generator LR schedule, `checkpoint.every_n_train_steps`,
  `grid.every_n_steps`;
- discriminator steps (`discriminator_steps`): the discriminator LR schedule;
- micro-batches (Lightning's batches): `trainer.val_check_interval`, `trainer.log_every_n_steps`;
- `samples_seen`: images consumed by all processes together.
"""

from __future__ import annotations

import re
import time
from typing import Any

import lightning as L
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from torch import nn

from vaetrain.checkpoints.schema import RunRecord
from vaetrain.frames import as_frames
from vaetrain.losses.config import LossConfig
from vaetrain.models.autoencoder import AutoencoderConfig, with_deterministic_posterior
from vaetrain.models.discriminator import DiscriminatorConfig, synchronise_batch_norm
from vaetrain.models.ema import EMAConfig
from vaetrain.models.families import downsampling_factor, family_of
from vaetrain.models.quantizer import code_indices
from vaetrain.plan import RunPlan, StepCounters
from vaetrain.training.checkpoint import keep_frozen_networks_out, record_of, restore_rng
from vaetrain.training.checkpoint_io import AtomicCheckpointIO
from vaetrain.training.config import GanOptimizers, SpeedConfig, StepSettings, TrainingConfig, accumulation_for, memory_layout
from vaetrain.training.engines import LightningEngine
from vaetrain.training.features import Setup
from vaetrain.training.networks import build_networks, compile_units, networks_with
from vaetrain.training.optim import gan_optimizers
from vaetrain.training.preflight import check_channels, check_frames, check_image_sizes, check_terms
from vaetrain.training.sharding import full_state_dict, is_sharded, shard, shard_autoencoder
from vaetrain.training.step import GanStep
from vaetrain.training.strategies import prepare_strategy
from vaetrain.training.validation import ValidationConfig, ValidationMetrics


class AutoencoderModule(L.LightningModule):
    """Trains an autoencoder of any family (+ PatchGAN) with reconstruction + LPIPS + KL + adversarial losses,
    or distils a teacher VAE into one (`loss.distillation`)."""

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
        alignment_encoder: nn.Module | None = None,
        teacher: nn.Module | None = None,
    ) -> None:
        """Each block is a frozen config (shared defaults are safe). `perceptual` injects an LPIPS-like module
        (images, images) -> per-image distance, `inception` rFID's feature network, `alignment_encoder` the
        alignment term's frozen patch-feature encoder (with a `feature_dim`), `teacher` the VAE to distil
        (else loaded from `loss.distillation.teacher`), e.g. in tests."""
        super().__init__()
        self.automatic_optimization = False
        self.autoencoder_config = autoencoder
        self.discriminator_config = discriminator
        self.loss_config = loss
        self.optimizer_config = optimizer
        self.ema_config = ema
        self.training_config = training
        self.speed_config = speed
        self.validation_config = validation

        injected = {"perceptual": perceptual, "alignment_encoder": alignment_encoder, "teacher": teacher}
        setup = Setup(autoencoder, discriminator, loss, ema, injected)
        self.features = build_networks(self, setup)
        check_terms(setup, self.autoencoder, self.features)
        settings = StepSettings.from_configs(autoencoder, training, optimizer)
        self.plan = RunPlan()  # the run's plan (`vaetrain.plan`): set-up, then the memory budget, write it
        self.gan_step = GanStep(self, loss, ema, settings, self.features, self.plan)  # after the EMA copy: its hook stays off it
        self.engine = LightningEngine(self)
        codebook = family_of(self.autoencoder).codebook(self.autoencoder)
        self.val_metrics = ValidationMetrics(validation, inception, codes=len(codebook) if codebook is not None else None)
        self._memory_format = torch.contiguous_format
        self._pending_rng_state: dict[str, Any] | None = None
        self._last_batch_time: float | None = None
        keep_frozen_networks_out(self)
        if self.speed_config.compile:
            self._compile_networks()

    # ----------------------------------------------------------------------------------------- state
    @property
    def counters(self) -> StepCounters:
        return self.plan.counters

    @property
    def accumulate(self) -> int:
        return self.plan.accumulate

    @property
    def image_channels(self) -> int:
        """Channels the autoencoder writes (and the discriminator and LPIPS read)."""
        return self.autoencoder.config.get("out_channels") or self.autoencoder.config.in_channels

    @property
    def downsampling_factor(self) -> int:
        return downsampling_factor(self.autoencoder)

    def _compile_networks(self) -> None:
        """Compiles the networks' forwards in place (`nn.Module.compile`), so parameter names, state dicts
        and checkpoints are the same as without compiling (`networks.NETWORKS`: role `compile`)."""
        for network in networks_with(self, "compile"):
            for unit in compile_units(network):
                unit.compile(dynamic=False)

    def set_channels_last(self, enabled: bool) -> None:
        """Stores the convolution networks' weights (and, from then on, each batch) as NHWC or NCHW (NDHWC
        for 3D convolutions' weights and clips)."""
        self._memory_format = torch.channels_last if enabled else torch.contiguous_format
        for network in networks_with(self, "channels_last"):
            network._apply(lambda t: t.contiguous(memory_format=memory_layout(t, enabled)) if t.dim() in (4, 5) else t)

    def set_gradient_checkpointing(self, enabled: bool) -> None:
        """Recompute the autoencoder's activations in backward (less memory, ~30 % more compute); the
        memory budget switches it for the run (the config keeps the value it was given)."""
        self.autoencoder.enable_gradient_checkpointing() if enabled else self.autoencoder.disable_gradient_checkpointing()
        self.plan.gradient_checkpointing = enabled

    def prepare_batch(self, images: torch.Tensor) -> torch.Tensor:
        """A batch in the networks' memory layout (NHWC under channels_last)."""
        return images.contiguous(memory_format=memory_layout(images, self._memory_format == torch.channels_last))

    def inference_autoencoder(self) -> nn.Module:
        """The EMA weights once the EMA has been updated, else the trained weights."""
        if self.ema is not None and int(self.ema.n_averaged) > 0:
            return self.ema.module
        return self.autoencoder

    def full_inference_state_dict(self) -> dict[str, torch.Tensor]:
        """The inference weights as complete CPU tensors, as diffusers should read them (a fixed posterior's
        log-variance pinned, see `with_deterministic_posterior`); under FSDP every process must call it."""
        weights = full_state_dict(self.inference_autoencoder())
        if self.autoencoder_config.posterior == "fixed":
            weights = with_deterministic_posterior(weights, self.autoencoder.config.latent_channels)
        return weights

    def forward(self, images: torch.Tensor, *, with_latents: bool = False):
        """Deterministic reconstruction (posterior mode) with the inference weights (and the latents)."""
        model = self.inference_autoencoder()
        family = family_of(model)
        latents = family.encode(model, images).mode()
        reconstruction = family.decode(model, latents)
        return (reconstruction, latents) if with_latents else reconstruction

    # ----------------------------------------------------------------------------------------- Lightning
    def setup(self, stage: str) -> None:
        strategy = self.trainer.strategy
        prepare_strategy(strategy)
        if type(strategy.checkpoint_io) is TorchCheckpointIO:  # another CheckpointIO plugin, if given, is kept
            strategy.checkpoint_io = AtomicCheckpointIO()
        device = strategy.root_device
        if self.speed_config.tf32 and device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        self.set_channels_last(self.speed_config.use_channels_last(device.type))
        self.discriminator = synchronise_batch_norm(self.discriminator, self.trainer.world_size, device.type)
        for feature in self.features:
            feature.place(self.trainer.global_rank, self.trainer.world_size)
        datamodule = getattr(self.trainer, "datamodule", None)
        if datamodule is not None and hasattr(datamodule, "check_resolution"):
            self.check_data(datamodule)
        self.plan.processes = self.trainer.world_size
        if datamodule is not None:
            self.plan.micro_batch = self.plan.micro_batch or getattr(datamodule, "batch_size", None)
            datamodule.plan = self.plan  # handed over: the data module reads the micro-batch and accumulation from it
        if self.training_config.global_batch_size and datamodule is not None:
            self.gan_step.accumulate = accumulation_for(self.training_config.global_batch_size, self.trainer.world_size, self.plan.micro_batch)

    def check_data(self, datamodule) -> None:
        """Fails early, in one line, when the images cannot be trained at their size or channel count (see `preflight`)."""
        check_image_sizes(datamodule, self.downsampling_factor, self.discriminator_config, self.loss_config, self.features)
        check_channels(datamodule, self.autoencoder.config.in_channels, self.image_channels)
        check_frames(datamodule, self.autoencoder, self.discriminator_config.kind)

    def configure_model(self) -> None:
        """Under `fsdp2` (a device mesh exists): shard the networks `networks.NETWORKS` marks (autoencoders block
        by block) over all processes. Other strategies leave the module as it is."""
        mesh = self.device_mesh
        if mesh is None or is_sharded(self.autoencoder):
            return
        for network in networks_with(self, "shard_blocks"):
            shard_autoencoder(getattr(network, "module", network), mesh["data_parallel"])  # the EMA's AveragedModel holds one
        for network in networks_with(self, "shard"):
            shard(network, mesh["data_parallel"])

    def configure_optimizers(self):
        return gan_optimizers(self)

    def training_step(self, images: torch.Tensor, batch_idx: int) -> None:
        if self._pending_rng_state is not None:
            restore_rng(self._pending_rng_state)
            self._pending_rng_state = None
        images = self.prepare_batch(images)
        self._log_training(self.gan_step(images, self.engine), images.shape[0])

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        """After the precision plugin unscaled the gradients: norms, skipping and clipping see true values."""
        self.gan_step.prepare_gradients("generator" if optimizer is self.optimizers()[0].optimizer else "discriminator")

    def on_validation_start(self) -> None:
        """The data's pixel format as the run has it now (percentile bounds restored from a checkpoint)."""
        pixels = getattr(getattr(self.trainer, "datamodule", None), "pixels", None)
        if pixels is not None:
            self.val_metrics.use_pixels(pixels)

    def validation_step(self, images: torch.Tensor, batch_idx: int) -> None:
        if images.numel() == 0:  # every image of the batch was a bad file (counted when listed)
            return
        images = self.prepare_batch(images)
        reconstruction, latents = self(images, with_latents=True)  # in the run's precision, as training sees it
        with torch.autocast(images.device.type, enabled=False):  # the metrics themselves in fp32
            lpips = self.perceptual(as_frames(reconstruction.float()), as_frames(images.float())) if self.perceptual is not None else None
        codebook = family_of(self.autoencoder).codebook(self.inference_autoencoder())
        self.val_metrics.update(images, reconstruction, lpips, code_indices(codebook, latents) if codebook is not None else None)

    def on_validation_epoch_end(self) -> None:
        """All metrics are logged; the per-channel ones (val/psnr_c0, ...) stay out of the progress bar."""
        values = self.val_metrics.compute_and_reset()
        per_channel = {k: v for k, v in values.items() if re.search(r"_c\d+$", k)}
        self.log_dict({k: v for k, v in values.items() if k not in per_channel}, prog_bar=True, sync_dist=False)
        self.log_dict(per_channel, sync_dist=False)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        record_of(self, getattr(self.trainer, "datamodule", None)).write_into(checkpoint)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        record = RunRecord.read_from(checkpoint)
        self.plan.counters = record.counters
        self._pending_rng_state = record.rng
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if datamodule is not None and hasattr(datamodule, "set_start_sample"):
            datamodule.set_start_sample(record.counters.samples_seen)

    def _log_training(self, logs: dict, batch_size: int) -> None:
        now = time.perf_counter()
        if self._last_batch_time is not None:
            logs["img_per_s"] = batch_size * self.trainer.world_size / max(now - self._last_batch_time, 1e-9)
        self._last_batch_time = now
        optimizers = self.optimizers()
        logs |= {"lr/generator": optimizers[0].param_groups[0]["lr"], "lr/discriminator": optimizers[1].param_groups[0]["lr"]}
        shown = {"img_per_s", "train/total", "steps/generator"}
        self.log_dict({k: v for k, v in logs.items() if k in shown}, prog_bar=True, batch_size=batch_size)
        self.log_dict({k: v for k, v in logs.items() if k not in shown}, batch_size=batch_size)
