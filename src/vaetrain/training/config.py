"""The `model.training`, `model.speed` and `model.optimizer` config blocks. Configs are never changed
during a run: what a run decides at start-up (accumulation for a global batch, a memory plan) is run-time
state, recorded in checkpoints as the run's plan."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from vaetrain.errors import ConfigError
from vaetrain.training.optim import OptimizerConfig


@dataclass(frozen=True)
class TrainingConfig:
    """How updates are scheduled."""

    accumulate_grad_batches: int = 1
    """Micro-batches per optimizer step (the module accumulates, so generator and discriminator step on the
    same accumulated batch)."""
    global_batch_size: int | None = None
    """When set: images per optimizer step over all processes; accumulation = global / (processes x
    micro-batch), worked out at start-up, so a run resumed on another number of GPUs means the same."""
    gan_updates: Literal["both", "alternate"] = "both"
    """`both` (LDM): both networks step on every accumulated batch after the warm-up; `alternate`: they take
    turns, discriminator first."""
    schedule_steps: int | None = None
    """Horizon of linear/cosine LR schedules; default trainer.max_steps."""
    max_consecutive_skips: int = 10
    """An update whose gradients are not finite is skipped (weights and optimizer moments unchanged) and
    counted; this many in a row stop the run with an error, keeping the last checkpoint."""

    def __post_init__(self) -> None:
        if self.accumulate_grad_batches < 1:
            raise ConfigError(f"model.training.accumulate_grad_batches must be >= 1, got {self.accumulate_grad_batches}")
        if self.global_batch_size is not None and self.global_batch_size < 1:
            raise ConfigError(f"model.training.global_batch_size must be >= 1, got {self.global_batch_size}")
        if self.max_consecutive_skips < 1:
            raise ConfigError(f"model.training.max_consecutive_skips must be >= 1, got {self.max_consecutive_skips}")


@dataclass(frozen=True)
class SpeedConfig:
    """Ways to run the same computation faster; none changes what is computed beyond float rounding."""

    channels_last: bool | None = None
    """NHWC weights and batches for the autoencoder, discriminator, EMA and LPIPS. None: on for CUDA
    (cuDNN's tensor-core convolutions want it), off on CPU, where it measured 1 % slower in fp32 and 14 %
    slower in bf16 (benchmarks/train_throughput.py, tiny preset)."""
    compile: bool = False
    """`torch.compile` the encoder, decoder, discriminator and LPIPS network (first steps slow while it
    compiles; on this project's 2-core CPU it measured 40 % slower, so it is for GPUs)."""
    tf32: bool = True
    """TensorFloat-32 matmuls and convolutions on Ampere and newer GPUs."""

    def use_channels_last(self, device_type: str) -> bool:
        return device_type == "cuda" if self.channels_last is None else self.channels_last


@dataclass(frozen=True)
class GanOptimizers:
    """One optimizer config per network."""

    generator: OptimizerConfig = field(default_factory=OptimizerConfig)
    """The autoencoder's optimizer."""
    discriminator: OptimizerConfig = field(default_factory=OptimizerConfig)
    """The discriminator's optimizer."""
    scale_lr: bool = False
    """LDM's rule (main.py): both learning rates times accumulation x processes x micro-batch, i.e. `lr` is
    per image of the global batch; the scaled rates are printed at start."""

    def __post_init__(self) -> None:
        if self.discriminator.lr_scale != "none" or self.discriminator.conv_in_lr is not None:
            raise ConfigError("model.optimizer.discriminator: lr_scale and conv_in_lr apply to the autoencoder (generator) only")


def accumulation_for(global_batch_size: int, world_size: int, micro_batch: int) -> int:
    """Micro-batches per optimizer step that make `global_batch_size` images over `world_size` processes."""
    per_step = world_size * micro_batch
    if global_batch_size % per_step:
        raise ConfigError(
            f"model.training.global_batch_size={global_batch_size} is not a multiple of {world_size} processes x data.batch_size {micro_batch} = {per_step}"
        )
    return global_batch_size // per_step


@dataclass(frozen=True)
class StepSettings:
    """What the step needs to know beyond the loss and EMA configs."""

    accumulate: int = 1
    gan_updates: Literal["both", "alternate"] = "both"
    posterior: Literal["learned", "fixed"] = "learned"
    posterior_std: float = 0.1  # the fixed posterior's relative noise
    latent_clamp: float | None = None
    clip_norm: dict[str, float | None] | None = None  # per network; None: no clipping
    max_consecutive_skips: int = 10

    @classmethod
    def from_configs(cls, autoencoder, training, optimizers) -> StepSettings:
        """From the module's config blocks (`AutoencoderConfig`, `TrainingConfig`, `GanOptimizers`)."""
        return cls(
            accumulate=training.accumulate_grad_batches,
            gan_updates=training.gan_updates,
            posterior=autoencoder.posterior,
            posterior_std=autoencoder.posterior_std,
            latent_clamp=autoencoder.latent_clamp,
            clip_norm={"generator": optimizers.generator.gradient_clip_norm, "discriminator": optimizers.discriminator.gradient_clip_norm},
            max_consecutive_skips=training.max_consecutive_skips,
        )
