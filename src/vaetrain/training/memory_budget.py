"""Fit a run into a memory budget: the largest micro-batch, with or without gradient checkpointing, that
stays under it, found by measuring real training steps; accumulation keeps the global batch.

`memory.max_memory: 8GB` on the command line or in a preset. The search needs only a probe
(micro-batch, checkpointing) -> (peak bytes or out-of-memory, seconds per step), so it is tested with an
injected probe on CPU; the CUDA probe runs the full objective (autoencoder, LPIPS, KL, discriminator,
adaptive weight, both optimizer steps and the EMA update) on a copy of the model.
"""

from __future__ import annotations

import copy
import gc
import re
import statistics
import sys
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, replace

import lightning as L
import torch

from vaetrain.errors import ConfigError
from vaetrain.losses.gan import discriminator_loss
from vaetrain.losses.objective import generator_loss

_UNITS = {"": 1, "b": 1, "k": 2**10, "kb": 2**10, "kib": 2**10, "m": 2**20, "mb": 2**20, "mib": 2**20, "g": 2**30, "gb": 2**30, "gib": 2**30}


def parse_memory_size(text: str | int) -> int:
    """'8GB', '7.5 GiB', '6000MB' -> bytes. GB and GiB both mean 2**30, as graphics cards are labelled
    (an "8 GB" card has 8 GiB)."""
    if isinstance(text, int):
        return text
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", str(text))
    unit = match.group(2).lower() if match else None
    if match is None or unit not in _UNITS:
        raise ConfigError(f"memory.max_memory: {text!r} is not a size like '8GB', '7.5GiB' or '6000MB'")
    return int(float(match.group(1)) * _UNITS[unit])


@dataclass(frozen=True)
class ProbeResult:
    """One measured configuration: peak device memory (None: it ran out of memory) and step time."""

    peak_bytes: int | None
    seconds_per_step: float = float("nan")


Probe = Callable[[int, bool], ProbeResult]


@dataclass(frozen=True)
class MemoryPlan:
    micro_batch: int
    gradient_checkpointing: bool
    accumulate: int
    peak_bytes: int
    images_per_second: float

    def describe(self, budget_bytes: int) -> str:
        return (
            f"micro-batch {self.micro_batch} x {self.accumulate} accumulation, gradient checkpointing "
            f"{'on' if self.gradient_checkpointing else 'off'}: peak {self.peak_bytes / 2**30:.2f} GiB of "
            f"{budget_bytes / 2**30:.2f} GiB, {self.images_per_second:.1f} img/s measured"
        )


def plan_memory(probe: Probe, budget_bytes: int, images_per_process: int, headroom: float = 0.1) -> MemoryPlan:
    """The fastest measured (micro-batch, checkpointing) whose peak stays under (1 - headroom) x budget.

    Micro-batches are the divisors of `images_per_process` (the global batch over the processes), so
    accumulation keeps the global batch exactly. For each checkpointing setting (off first) micro-batches
    are tried upward until one does not fit; checkpointing is tried only when, without it, the whole
    per-process batch does not fit in one micro-batch. Among the fitting ones the highest measured
    images/second wins; within 5 % of it, no checkpointing, then the larger micro-batch.
    """
    limit = budget_bytes * (1.0 - headroom)
    candidates = [m for m in range(1, images_per_process + 1) if images_per_process % m == 0]
    fitting: list[MemoryPlan] = []
    smallest_need: int | None = None
    for checkpointing in (False, True):
        for micro_batch in candidates:
            result = probe(micro_batch, checkpointing)
            if result.peak_bytes is not None and micro_batch == 1:
                smallest_need = result.peak_bytes if smallest_need is None else min(smallest_need, result.peak_bytes)
            if result.peak_bytes is None or result.peak_bytes > limit:
                break
            fitting.append(
                MemoryPlan(
                    micro_batch=micro_batch,
                    gradient_checkpointing=checkpointing,
                    accumulate=images_per_process // micro_batch,
                    peak_bytes=result.peak_bytes,
                    images_per_second=micro_batch / result.seconds_per_step,
                )
            )
        if any(plan.micro_batch == images_per_process for plan in fitting):
            break
    if not fitting:
        need = f"{smallest_need / 2**30:.2f} GiB" if smallest_need else "more than the device has"
        raise ConfigError(
            f"memory.max_memory: even micro-batch 1 with gradient checkpointing needs {need}, over "
            f"{limit / 2**30:.2f} GiB ({budget_bytes / 2**30:.2f} GiB less {headroom:.0%} headroom); lower "
            "data.resolution or use a smaller model"
        )
    best = max(plan.images_per_second for plan in fitting)
    close = [plan for plan in fitting if plan.images_per_second >= 0.95 * best]
    return max(close, key=lambda plan: (not plan.gradient_checkpointing, plan.micro_batch))


class MemoryBudget(L.Callback):
    """`memory.max_memory`: before training, measures real steps and sets `data.batch_size`, gradient
    checkpointing and accumulation (the configured global batch is kept). Every process measures; rank 0's
    plan is used by all. `probe` injects a measurement (tests); by default a CUDA probe."""

    def __init__(self, max_memory: str | None = None, headroom: float = 0.1, probe_steps: int = 3) -> None:
        self.max_memory = max_memory
        self.headroom = headroom
        self.probe_steps = probe_steps
        self.probe: Probe | None = None
        self.plan: MemoryPlan | None = None

    def check(self, device: torch.device) -> None:
        """Fails early (before any run folder is written) on a bad size or a device it cannot measure."""
        if self.max_memory is not None:
            parse_memory_size(self.max_memory)
            if self.probe is None and device.type != "cuda":
                raise ConfigError(f"memory.max_memory measures CUDA memory; this run is on {device.type} (set data.batch_size instead)")

    def setup(self, trainer: L.Trainer, pl_module, stage: str) -> None:
        if stage != "fit" or self.max_memory is None:
            return
        self.check(trainer.strategy.root_device)
        budget = parse_memory_size(self.max_memory)
        datamodule = trainer.datamodule
        training = pl_module.training_config
        global_batch = training.global_batch_size or datamodule.batch_size * training.accumulate_grad_batches * trainer.world_size
        if global_batch % trainer.world_size:
            raise ConfigError(f"memory.max_memory: global batch {global_batch} is not divisible by {trainer.world_size} processes")
        probe = self.probe or cuda_step_probe(
            pl_module, trainer.strategy.root_device, datamodule.resolution, trainer.precision_plugin.train_step_context, self.probe_steps
        )
        plan = trainer.strategy.broadcast(plan_memory(probe, budget, global_batch // trainer.world_size, self.headroom), src=0)
        datamodule.batch_size = plan.micro_batch
        pl_module.set_gradient_checkpointing(plan.gradient_checkpointing)
        training.global_batch_size = global_batch  # the module's setup turns it into accumulation
        self.plan = plan
        if trainer.is_global_zero:
            print(f"vaetrain: memory.max_memory {self.max_memory}: {plan.describe(budget)}", file=sys.stderr)


def cuda_step_probe(
    module,
    device: torch.device,
    resolution: int,
    autocast: Callable[[], AbstractContextManager],
    steps: int = 3,
) -> Probe:
    """Measures `steps` full training steps of a copy of `module` on random images at `resolution`: the
    peak of CUDA memory reserved (what the card must hold; add headroom for the CUDA context) and the
    median step time after the first."""

    def probe(micro_batch: int, checkpointing: bool) -> ProbeResult:
        replica = None
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        try:
            replica = _replica(module, device, checkpointing)
            optimizers = replica.build_optimizers()
            images = torch.rand(micro_batch, 3, resolution, resolution, device=device) * 2 - 1
            images = images.contiguous(memory_format=replica._memory_format)
            times = []
            for _ in range(max(steps, 2)):
                start = time.perf_counter()
                _full_step(replica, images, optimizers, autocast)
                torch.cuda.synchronize(device)
                times.append(time.perf_counter() - start)
            return ProbeResult(torch.cuda.max_memory_reserved(device), statistics.median(times[1:]))
        except torch.cuda.OutOfMemoryError:
            return ProbeResult(None)
        finally:
            del replica
            gc.collect()
            torch.cuda.empty_cache()

    return probe


def _replica(module, device: torch.device, checkpointing: bool):
    """A copy of the module (weights, EMA, LPIPS) on `device`, detached from the trainer."""
    trainer = module._trainer
    module.trainer = None
    try:
        replica = copy.deepcopy(module)
    finally:
        module.trainer = trainer
    replica.loss_config = replace(replica.loss_config, disc_start_step=0)
    replica.set_gradient_checkpointing(checkpointing)
    replica.set_channels_last(replica.speed_config.use_channels_last(device.type))
    return replica.to(device).train()


def _full_step(replica, images: torch.Tensor, optimizers, autocast: Callable[[], AbstractContextManager]) -> None:
    """One generator and one discriminator update with every term on, as `gan_updates: both` runs them."""
    generator_optimizer, discriminator_optimizer = optimizers
    with autocast():
        replica.discriminator.requires_grad_(False)
        reconstruction, mean, logvar = replica._reconstruct(images)
        output = generator_loss(
            images, reconstruction, mean, logvar, config=replica.loss_config, perceptual=replica.perceptual,
            last_layer_grad=replica._last_layer.take_weight_gradient(), discriminator=replica.discriminator,
        )
        output.backward_target.backward()
        generator_optimizer.step()
        generator_optimizer.zero_grad(set_to_none=True)
        if replica.ema is not None:
            replica.ema.update_parameters(replica.autoencoder)
        replica.discriminator.requires_grad_(True)
        logits = replica.discriminator(torch.cat([images, reconstruction.detach()]))
        discriminator_loss(*logits.float().chunk(2), replica.loss_config.gan_loss).backward()
        discriminator_optimizer.step()
        discriminator_optimizer.zero_grad(set_to_none=True)
