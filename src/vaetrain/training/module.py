"""The LightningModule: the LDM objective with manual optimization of autoencoder and discriminator.

Step counting. Lightning's `global_step` would count every `optimizer.step()` of both optimizers, so the
discriminator steps through the strategy directly (precision, clipping and hooks included) and
`trainer.global_step` counts generator steps only. Settings say which counter they use:
- generator steps (`generator_steps` == `trainer.global_step`): `trainer.max_steps`,
  `loss.disc_start_step`, `ema.*`, the generator LR schedule, `checkpoint.every_n_train_steps`,
  `grid.every_n_steps`;
- discriminator steps (`discriminator_steps`): the discriminator LR schedule;
- micro-batches (Lightning's batches): `trainer.val_check_interval`, `trainer.log_every_n_steps`;
- `samples_seen`: images consumed by all processes together.

Gradient accumulation is done here (`accumulate_grad_batches`), so a generator/discriminator pair
always steps on the same accumulated batch. With `gan_updates: both` (LDM) both networks step on every
accumulated batch, the discriminator on the detached reconstructions of the generator's forward; with
`alternate` they take turns, discriminator first.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import lightning as L
import torch
from torch import nn

from vaetrain.errors import ConfigError
from vaetrain.evaluation.metrics import ReconstructionMetrics
from vaetrain.losses.gan import discriminator_loss
from vaetrain.losses.objective import LossConfig, generator_loss
from vaetrain.losses.perceptual import build_perceptual_loss
from vaetrain.models.autoencoder import AutoencoderConfig, LastLayerInput, build_autoencoder, downsampling_factor
from vaetrain.models.discriminator import DiscriminatorConfig, PatchDiscriminator, synchronise_batch_norm
from vaetrain.models.ema import EMAConfig, build_ema
from vaetrain.training.optim import OptimizerConfig, build_optimizer, build_scheduler
from vaetrain.training.sharding import full_state_dict, is_sharded, shard, shard_autoencoder

Phase = Literal["generator", "discriminator", "both"]
_CHECKPOINT_KEY = "vaetrain"


@dataclass
class StepCounters:
    """Saved in every checkpoint; see the module docstring for what each setting counts."""

    generator_steps: int = 0
    discriminator_steps: int = 0
    micro_batches: int = 0
    samples_seen: int = 0
    adaptive_weight_nonfinite: int = 0


@dataclass
class TrainingConfig:
    """How updates are scheduled. `accumulate_grad_batches` micro-batches form one optimizer step, or, with
    `global_batch_size`, as many as keep that many images per step whatever the number of processes (so a
    run resumed on another number of GPUs means the same)."""

    accumulate_grad_batches: int = 1
    global_batch_size: int | None = None  # when set: accumulation = global / (processes x micro-batch), per run
    gan_updates: Literal["both", "alternate"] = "both"
    schedule_steps: int | None = None  # horizon of linear/cosine schedules; default trainer.max_steps


@dataclass
class SpeedConfig:
    """Ways to run the same computation faster; none changes what is computed beyond float rounding.

    `channels_last`: NHWC weights and batches for the autoencoder, discriminator, EMA and LPIPS. Default
    (None): on for CUDA devices (cuDNN's tensor-core convolutions want it), off on CPU, where it measured
    1 % slower in fp32 and 14 % slower in bf16 (benchmarks/train_throughput.py, tiny preset).
    `compile`: `torch.compile` the encoder, decoder, discriminator and LPIPS network (first steps slow
    while it compiles; on this project's 2-core CPU it measured 40 % slower, so it is for GPUs).
    `tf32`: TensorFloat-32 matmuls and convolutions on Ampere and newer GPUs.
    """

    channels_last: bool | None = None
    compile: bool = False
    tf32: bool = True

    def use_channels_last(self, device_type: str) -> bool:
        return device_type == "cuda" if self.channels_last is None else self.channels_last


@dataclass
class OptimizersConfig:
    generator: OptimizerConfig = field(default_factory=OptimizerConfig)
    discriminator: OptimizerConfig = field(default_factory=OptimizerConfig)


class AutoencoderModule(L.LightningModule):
    """Trains an AutoencoderKL (+ PatchGAN) with reconstruction + LPIPS + KL + adversarial losses."""

    def __init__(
        self,
        autoencoder: AutoencoderConfig | None = None,
        discriminator: DiscriminatorConfig | None = None,
        loss: LossConfig | None = None,
        optimizer: OptimizersConfig | None = None,
        ema: EMAConfig | None = None,
        training: TrainingConfig | None = None,
        speed: SpeedConfig | None = None,
        perceptual: nn.Module | None = None,
    ) -> None:
        """`perceptual` injects an LPIPS-like module (images, images) -> per-image distance, e.g. in tests."""
        super().__init__()
        self.automatic_optimization = False
        self.autoencoder_config = autoencoder or AutoencoderConfig()
        self.discriminator_config = discriminator or DiscriminatorConfig()
        self.loss_config = loss or LossConfig()
        self.optimizer_config = optimizer or OptimizersConfig()
        self.ema_config = ema or EMAConfig()
        self.training_config = training or TrainingConfig()
        self.speed_config = speed or SpeedConfig()
        if self.training_config.accumulate_grad_batches < 1:
            raise ConfigError("model.training.accumulate_grad_batches must be >= 1")

        self.autoencoder = build_autoencoder(self.autoencoder_config)
        self.discriminator = PatchDiscriminator(self.discriminator_config)
        if perceptual is None and self.loss_config.perceptual_weight > 0:
            perceptual = build_perceptual_loss(
                self.loss_config.perceptual_network, self.loss_config.perceptual_backbone
            )
        self.perceptual = perceptual
        self._memory_format = torch.contiguous_format
        self.ema = build_ema(self.autoencoder, self.ema_config.decay) if self.ema_config.enabled else None
        self._last_layer = LastLayerInput(self.autoencoder)  # after the EMA copy, which needs no hook
        self.val_metrics = ReconstructionMetrics()
        self.counters = StepCounters()
        self._last_adaptive_weight = 1.0
        self._pending_rng_state: dict[str, Any] | None = None
        self._last_batch_time: float | None = None
        self._power_iteration_window = -1
        # Frozen LPIPS weights are rebuilt at start-up, not stored in every checkpoint (VGG16 is 58 MB), and
        # never loaded from one. Exception: FSDP's loader insists on every tensor of the model, so sharded
        # runs store them (and, resuming sharded, load them back).
        self.register_state_dict_post_hook(_drop_perceptual_keys)
        self.register_load_state_dict_pre_hook(_skip_stored_perceptual_keys)
        self.register_load_state_dict_post_hook(_ignore_missing_perceptual_keys)
        if self.speed_config.compile:
            self._compile_networks()

    # ----------------------------------------------------------------------------------------- helpers
    @property
    def downsampling_factor(self) -> int:
        return downsampling_factor(self.autoencoder)

    @property
    def accumulate(self) -> int:
        return self.training_config.accumulate_grad_batches

    def _compile_networks(self) -> None:
        """Compiles the networks' forwards in place (`nn.Module.compile`), so parameter names, state dicts
        and checkpoints are the same as without compiling. The EMA copy is not compiled."""
        networks = [self.autoencoder.encoder, self.autoencoder.decoder, self.discriminator]
        if self.perceptual is not None:
            networks.append(self.perceptual)
        for network in networks:
            network.compile(dynamic=False)

    def set_channels_last(self, enabled: bool) -> None:
        """Stores the convolution networks' weights (and, from then on, each batch) as NHWC or NCHW."""
        self._memory_format = torch.channels_last if enabled else torch.contiguous_format
        for network in (self.autoencoder, self.discriminator, self.perceptual, self.ema):
            if network is not None:
                network.to(memory_format=self._memory_format)

    def set_gradient_checkpointing(self, enabled: bool) -> None:
        """Recompute the autoencoder's activations in backward instead of keeping them (less memory, ~30 %
        more compute); the memory budget switches it."""
        self.autoencoder_config.gradient_checkpointing = enabled
        if enabled:
            self.autoencoder.enable_gradient_checkpointing()
        else:
            self.autoencoder.disable_gradient_checkpointing()

    def inference_autoencoder(self) -> nn.Module:
        """The EMA weights once the EMA has been updated, else the trained weights."""
        if self.ema is not None and int(self.ema.n_averaged) > 0:
            return self.ema.module
        return self.autoencoder

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Deterministic reconstruction (posterior mode) with the inference weights."""
        return self.inference_autoencoder()(images, sample_posterior=False).sample

    def phase(self) -> Phase:
        """Which networks update on the current accumulated batch (fixed for the whole window)."""
        counters, start = self.counters, self.loss_config.disc_start_step
        if counters.generator_steps < start:
            return "generator"
        if self.training_config.gan_updates == "both":
            return "both"
        return "discriminator" if counters.discriminator_steps <= counters.generator_steps - start else "generator"

    # ----------------------------------------------------------------------------------------- Lightning
    def setup(self, stage: str) -> None:
        device = self.trainer.strategy.root_device
        if self.speed_config.tf32 and device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        self.set_channels_last(self.speed_config.use_channels_last(device.type))
        self.discriminator = synchronise_batch_norm(self.discriminator, self.trainer.world_size, device.type)
        datamodule = getattr(self.trainer, "datamodule", None)
        if datamodule is not None and hasattr(datamodule, "check_resolution"):
            datamodule.check_resolution(self.downsampling_factor)
        if self.training_config.global_batch_size and datamodule is not None:
            self.training_config.accumulate_grad_batches = accumulation_for(
                self.training_config.global_batch_size, self.trainer.world_size, datamodule.batch_size
            )

    def configure_model(self) -> None:
        """Under `--trainer.strategy fsdp2` (a device mesh exists): shard the autoencoder block by block, the
        discriminator and the EMA copy over all processes. Other strategies leave the module as it is."""
        mesh = self.device_mesh
        if mesh is None or is_sharded(self.autoencoder):
            return
        data_parallel = mesh["data_parallel"]
        shard_autoencoder(self.autoencoder, data_parallel)
        shard(self.discriminator, data_parallel)
        if self.ema is not None:
            shard_autoencoder(self.ema.module, data_parallel)

    def full_inference_state_dict(self) -> dict[str, torch.Tensor]:
        """The inference weights (EMA once updated) as complete CPU tensors; under FSDP every process must
        call it (it gathers) and only rank 0 receives them."""
        return full_state_dict(self.inference_autoencoder())

    def build_optimizers(self) -> list[torch.optim.Optimizer]:
        """The generator's (trainable autoencoder weights) and the discriminator's optimizers."""
        generator_params = [p for p in self.autoencoder.parameters() if p.requires_grad]
        if not generator_params:
            raise ConfigError("model.autoencoder: no trainable parameters (everything is frozen)")
        configs = self.optimizer_config
        return [
            build_optimizer(generator_params, configs.generator),
            build_optimizer(self.discriminator.parameters(), configs.discriminator),
        ]

    def configure_optimizers(self):
        configs = self.optimizer_config
        optimizers = self.build_optimizers()
        horizon = self.training_config.schedule_steps or max(self.trainer.max_steps, 1)
        schedulers = [
            {"scheduler": build_scheduler(opt, cfg, horizon), "interval": "step"}
            for opt, cfg in zip(optimizers, (configs.generator, configs.discriminator))
        ]
        return optimizers, schedulers

    def training_step(self, images: torch.Tensor, batch_idx: int) -> None:
        if self._pending_rng_state is not None:
            _set_rng_state(self._pending_rng_state)
            self._pending_rng_state = None
        images = images.contiguous(memory_format=self._memory_format)
        generator_optimizer, discriminator_optimizer = self.optimizers()
        generator_scheduler, discriminator_scheduler = self.lr_schedulers()
        closes_window = (self.counters.micro_batches + 1) % self.accumulate == 0
        phase = self.phase()
        logs: dict[str, torch.Tensor | float] = {}

        reconstruction = None
        if phase in ("generator", "both"):
            use_gan = self.counters.generator_steps >= self.loss_config.disc_start_step
            with generator_optimizer.toggle_model(sync_grad=closes_window):
                reconstruction, generator_logs = self._generator_backward(images, use_gan)
            logs |= generator_logs
            if closes_window:
                generator_optimizer.step()
                generator_optimizer.zero_grad(set_to_none=True)
                generator_scheduler.step()
                self.counters.generator_steps += 1
                self._update_ema()

        if phase in ("discriminator", "both"):
            if reconstruction is None:
                with torch.no_grad():
                    reconstruction = self._reconstruct(images)[0]
            with discriminator_optimizer.toggle_model(sync_grad=closes_window):
                logs |= self._discriminator_backward(images, reconstruction.detach())
            if closes_window:
                self._discriminator_step(discriminator_optimizer)
                discriminator_optimizer.zero_grad(set_to_none=True)
                discriminator_scheduler.step()
                self.counters.discriminator_steps += 1

        self.counters.micro_batches += 1
        self.counters.samples_seen += images.shape[0] * self.trainer.world_size
        self._log_training(logs, images.shape[0], generator_optimizer)

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        """Runs after the precision plugin unscaled the gradients, so clipping sees true norms."""
        generator_optimizer, _ = self.optimizers()
        is_generator = optimizer is generator_optimizer.optimizer
        config = self.optimizer_config.generator if is_generator else self.optimizer_config.discriminator
        if config.gradient_clip_norm:
            self.clip_gradients(optimizer, gradient_clip_val=config.gradient_clip_norm, gradient_clip_algorithm="norm")

    def validation_step(self, images: torch.Tensor, batch_idx: int) -> None:
        images = images.contiguous(memory_format=self._memory_format)
        reconstruction = self(images)  # in the run's precision, as training sees it
        with torch.autocast(images.device.type, enabled=False):  # the metrics themselves in fp32
            lpips = self.perceptual(reconstruction.float(), images.float()) if self.perceptual is not None else None
        self.val_metrics.update(images, reconstruction, lpips)

    def on_validation_epoch_end(self) -> None:
        values = self.val_metrics.compute()  # already reduced over processes by torchmetrics
        self.log_dict({f"val/{k}": v for k, v in values.items() if v is not None}, prog_bar=True, sync_dist=False)
        self.val_metrics.reset()

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[_CHECKPOINT_KEY] = {
            "counters": asdict(self.counters),
            "last_adaptive_weight": self._last_adaptive_weight,
            "rng": _get_rng_state(),
            "autoencoder_config": _plain(dict(self.autoencoder.config)),
            "training_config": _plain(
                {
                    "autoencoder": asdict(self.autoencoder_config),
                    "loss": asdict(self.loss_config),
                    "training": asdict(self.training_config),
                }
            ),
            "data": _data_description(getattr(self.trainer, "datamodule", None)),
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get(_CHECKPOINT_KEY)
        if state is None:
            raise ConfigError("ckpt_path: not a vaetrain checkpoint (no 'vaetrain' section)")
        self.counters = StepCounters(**state["counters"])
        self._last_adaptive_weight = float(state["last_adaptive_weight"])
        self._pending_rng_state = state["rng"]
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if datamodule is not None and hasattr(datamodule, "set_start_sample"):
            datamodule.set_start_sample(self.counters.samples_seen)

    # ----------------------------------------------------------------------------------------- steps
    def _reconstruct(self, images: torch.Tensor):
        """Encode (without a graph when the encoder is frozen), take a posterior sample or mode, decode."""
        with torch.set_grad_enabled(torch.is_grad_enabled() and self.autoencoder_config.train_encoder):
            posterior = self.autoencoder.encode(images).latent_dist
        mean, logvar = posterior.mean.float(), posterior.logvar.float()
        latents = mean
        if self.loss_config.sample_posterior:
            latents = mean + torch.exp(0.5 * logvar) * torch.randn_like(mean)
        reconstruction = self.autoencoder.decode(latents).sample
        return reconstruction, mean, logvar

    def _before_discriminator_forward(self) -> None:
        """Spectral norm advances once per accumulated batch: on the first discriminator forward of the
        window, so 1 process x 4 micro-batches and 2 processes x 2 train alike."""
        window = self.counters.micro_batches // self.accumulate
        self.discriminator.set_power_iteration(self.training and window != self._power_iteration_window)
        self._power_iteration_window = window

    def _generator_backward(self, images: torch.Tensor, use_gan: bool):
        reconstruction, mean, logvar = self._reconstruct(images)
        last_layer_grad = self._last_layer.take_weight_gradient()
        if use_gan:
            self._before_discriminator_forward()
        output = generator_loss(
            images,
            reconstruction,
            mean,
            logvar,
            config=self.loss_config,
            perceptual=self.perceptual,
            last_layer_grad=last_layer_grad,
            discriminator=self.discriminator if use_gan else None,
            fallback_adaptive_weight=self._last_adaptive_weight,
            mean_over_processes=self._mean_over_processes if self.trainer.world_size > 1 else None,
        )
        if use_gan and self.loss_config.adaptive_weight:
            if output.adaptive_weight_finite:
                self._last_adaptive_weight = float(output.terms["adaptive_weight"]) / max(
                    self.loss_config.disc_weight, 1e-12
                )
            else:
                self.counters.adaptive_weight_nonfinite += 1
        self.manual_backward(output.backward_target / self.accumulate)
        logs = {f"train/{name}": value for name, value in output.terms.items()}
        logs["train/latent_mean"] = mean.detach().mean()
        logs["train/latent_std"] = mean.detach().std()
        logs["train/posterior_std"] = torch.exp(0.5 * logvar.detach()).mean()
        return reconstruction, logs

    def _mean_over_processes(self, tensor: torch.Tensor) -> torch.Tensor:
        return self.trainer.strategy.reduce(tensor, reduce_op="mean")

    def _discriminator_backward(self, images: torch.Tensor, reconstruction: torch.Tensor) -> dict[str, torch.Tensor]:
        """Real and fake in one forward, so norm statistics and spectral-norm updates see both."""
        self._before_discriminator_forward()
        logits = self.discriminator(torch.cat([images, reconstruction.to(images.dtype)]))
        real_logits, fake_logits = logits.float().chunk(2)
        loss = discriminator_loss(real_logits, fake_logits, self.loss_config.gan_loss)
        self.manual_backward(loss / self.accumulate)
        return {
            "train/discriminator": loss.detach(),
            "train/logits_real": real_logits.detach().mean(),
            "train/logits_fake_d": fake_logits.detach().mean(),
        }

    def _discriminator_step(self, optimizer) -> None:
        """Steps through the strategy (precision plugin, clipping hook) but not `LightningOptimizer.step`,
        which would add to `trainer.global_step` and halve every step-based setting."""
        self.trainer.strategy.optimizer_step(optimizer.optimizer, closure=_no_closure)

    def _update_ema(self) -> None:
        config, steps = self.ema_config, self.counters.generator_steps
        if self.ema is not None and steps >= config.start_step and (steps - config.start_step) % config.every_n_steps == 0:
            self.ema.update_parameters(self.autoencoder)

    def _log_training(self, logs: dict, batch_size: int, generator_optimizer) -> None:
        now = time.perf_counter()
        if self._last_batch_time is not None:
            logs["img_per_s"] = batch_size * self.trainer.world_size / max(now - self._last_batch_time, 1e-9)
        self._last_batch_time = now
        counters = self.counters
        logs |= {
            "lr/generator": generator_optimizer.param_groups[0]["lr"],
            "lr/discriminator": self.optimizers()[1].param_groups[0]["lr"],
            "steps/generator": float(counters.generator_steps),
            "steps/discriminator": float(counters.discriminator_steps),
            "steps/samples": float(counters.samples_seen),
            "train/adaptive_weight_nonfinite": float(counters.adaptive_weight_nonfinite),
        }
        prog = {"img_per_s", "train/total", "steps/generator"}
        self.log_dict({k: v for k, v in logs.items() if k in prog}, prog_bar=True, batch_size=batch_size)
        self.log_dict({k: v for k, v in logs.items() if k not in prog}, batch_size=batch_size)


def accumulation_for(global_batch_size: int, world_size: int, micro_batch: int) -> int:
    """Micro-batches per optimizer step that make `global_batch_size` images over `world_size` processes."""
    per_step = world_size * micro_batch
    if global_batch_size % per_step:
        raise ConfigError(
            f"model.training.global_batch_size={global_batch_size} is not a multiple of {world_size} processes x "
            f"data.batch_size {micro_batch} = {per_step}"
        )
    return global_batch_size // per_step


def _no_closure() -> None:
    return None


def _remove_perceptual_keys(state_dict, prefix: str) -> None:
    for key in [k for k in state_dict if k.startswith(prefix + "perceptual.")]:
        del state_dict[key]


def _drop_perceptual_keys(module, state_dict, prefix, local_metadata) -> None:
    if not is_sharded(module.autoencoder):
        _remove_perceptual_keys(state_dict, prefix)


def _skip_stored_perceptual_keys(module, state_dict, prefix, *args) -> None:
    _remove_perceptual_keys(state_dict, prefix)


def _ignore_missing_perceptual_keys(module, incompatible_keys) -> None:
    missing = incompatible_keys.missing_keys
    missing[:] = [k for k in missing if not k.startswith("perceptual.")]


def _get_rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _plain(value: Any) -> Any:
    """Lists, dicts and scalars only, so the checkpoint loads with `weights_only=True`."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def _data_description(datamodule) -> dict[str, Any]:
    if datamodule is None:
        return {}
    return {"path": str(getattr(datamodule, "root", "")), "resolution": getattr(datamodule, "resolution", None)}
