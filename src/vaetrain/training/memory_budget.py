"""`memory.max_memory`: fit a run into a memory budget by measuring training steps of the run's own model.

The probe runs at `on_fit_start`, after `configure_model` (under `fsdp2` it measures the sharded model)
and after the strategy set the model up (device, DDP wrapper, optimizers), before the data loader is built
and before a checkpoint's optimizer state is restored. Each candidate (micro-batch, gradient checkpointing)
runs `probe_steps` calls of the run's `GanStep` with the full objective (both networks, the GAN term and
adaptive weight, both optimizer steps, the EMA per its config) through `ProbeEngine`: the training step's
own path (`manual_backward`, precision plugin, clipping hook) without the all-reduces it can avoid. Then
everything is put back: weights, buffers, optimizer state (emptied), the step's counters, RNG and the
checkpointing switch. Every process measures; the largest peak and slowest time of all processes are
used, so all take the same path through the search, and rank 0's plan is broadcast. Under `fsdp2` a
process that runs out of memory mid-forward leaves the others in a collective until the strategy's
timeout. `reader` measures the peak (CUDA's allocator by default; tests inject one to run on CPU).
"""

from __future__ import annotations

import gc
import statistics
import sys
import time
from contextlib import contextmanager

import lightning as L
import torch
from torch.distributed.tensor import DTensor

from vaetrain.data.streams.schedule import phase_at_step
from vaetrain.errors import ConfigError
from vaetrain.models.families import family_of
from vaetrain.training.checkpoint import capture_rng, restore_rng
from vaetrain.training.engines import ProbeEngine
from vaetrain.training.features import no_accumulation_reason
from vaetrain.training.memory_search import MeasureSteps, StepMeasurement, parse_memory_size, plan_memory
from vaetrain.training.networks import in_layout, networks_with


class MemoryReader:
    """Peak device memory of a measured stretch of steps."""

    def start(self, module) -> None:
        raise NotImplementedError

    def peak_bytes(self) -> int:
        raise NotImplementedError

    def synchronize(self) -> None:
        return None


class CudaMemoryReader(MemoryReader):
    """CUDA memory reserved by PyTorch's allocator (what the card must hold; add headroom for the context)."""

    def start(self, module) -> None:
        self.device = module.device
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(self.device)

    def peak_bytes(self) -> int:
        return torch.cuda.max_memory_reserved(self.device)

    def synchronize(self) -> None:
        torch.cuda.synchronize(self.device)


class MemoryBudget(L.Callback):
    """Sets the run's micro-batch, gradient checkpointing and accumulation so that a step fits `max_memory`
    (the configured global batch is kept). `probe` replaces the measurement in tests of the search."""

    def __init__(self, max_memory: str | None = None, headroom: float = 0.1, probe_steps: int = 3, reader: MemoryReader | None = None) -> None:
        self.max_memory = max_memory
        self.headroom = headroom
        self.probe_steps = probe_steps
        self.reader = reader
        self.probe: MeasureSteps | None = None
        self.plan = None
        self.phase_plans: list = []
        self.phase_starts: list[int] = [0]
        self._applied: int | None = None

    def check(self, device: torch.device) -> None:
        """Fails early (before any run folder is written) on a bad size or a device it cannot measure."""
        if self.max_memory is not None:
            parse_memory_size(self.max_memory)
            if self.probe is None and self.reader is None and device.type != "cuda":
                raise ConfigError(f"memory.max_memory measures CUDA memory; this run is on {device.type} (set data.batch_size instead)")

    def on_fit_start(self, trainer: L.Trainer, module) -> None:
        """Plans every training phase (one, or one per `data.resolution_schedule` entry) before training starts,
        so a budget nothing fits fails now, not at the change; the first phase's plan is applied here, each
        later one at the step its phase starts (`on_train_batch_start`)."""
        if self.max_memory is None:
            return
        self.check(trainer.strategy.root_device)
        budget, datamodule, world, plan = parse_memory_size(self.max_memory), trainer.datamodule, trainer.world_size, module.plan
        global_batch = plan.micro_batch * plan.accumulate * world
        scheduled = bool(getattr(datamodule, "resolution_schedule", None))
        phases = datamodule.phases() if scheduled else []
        sides = (
            [(p.resolution, p.resolution) for p in phases]
            if scheduled
            else [max(datamodule.buckets or [(datamodule.resolution,) * 2], key=lambda hw: hw[0] * hw[1])]
        )
        channels = family_of(module.autoencoder).image_channels(module.autoencoder)[0]
        frames = (datamodule.clip.frames,) if getattr(datamodule, "clip", None) is not None else ()  # clips: (C, T, H, W)
        plans = []
        for side in sides:
            probe = self.probe or StepProbe(module, trainer, self.reader or CudaMemoryReader(), (channels, *frames, *side), self.probe_steps)
            plans.append(
                trainer.strategy.broadcast(
                    plan_memory(
                        probe,
                        budget,
                        global_batch // world,
                        self.headroom,
                        checkpointing_available=family_of(module.autoencoder).gradient_checkpointing,
                        no_accumulation=no_accumulation_reason(module.features),
                    ),
                    src=0,
                )
            )
        plan.micro_batch = plans[0].micro_batch
        if scheduled:
            plan.phase_batch_sizes = [phase_plan.micro_batch for phase_plan in plans]
            self.phase_starts = [phase.start_step for phase in phases]
        self.phase_plans, self._applied = plans, None
        self._apply(module, 0)
        plan.memory = {"max_memory": self.max_memory} | plans[0].as_dict()
        if scheduled:
            plan.memory["phases"] = [{"start_step": s, "resolution": side[0]} | p.as_dict() for s, side, p in zip(self.phase_starts, sides, plans)]
        self.plan = plans[0]
        if trainer.is_global_zero:
            for index, phase_plan in enumerate(plans):
                where = f" (from step {self.phase_starts[index]}, {sides[index][0]} px)" if scheduled else ""
                print(f"vaetrain: memory.max_memory {self.max_memory}{where}: {phase_plan.describe(budget)}", file=sys.stderr)

    def on_train_batch_start(self, trainer: L.Trainer, module, batch, batch_idx: int) -> None:
        """At the first micro-batch of a phase's first step (or of a resumed run): that phase's plan."""
        if len(self.phase_plans) > 1:
            self._apply(module, phase_at_step(self.phase_starts, module.counters.generator_steps))

    def _apply(self, module, index: int) -> None:
        if index != self._applied:
            plan = self.phase_plans[index]
            module.set_gradient_checkpointing(plan.gradient_checkpointing)
            module.gan_step.accumulate = plan.accumulate
            self._applied = index


class StepProbe:
    """(micro-batch, checkpointing) -> the peak memory and step time of the run's own training step."""

    def __init__(self, module, trainer: L.Trainer, reader: MemoryReader, image_shape: tuple[int, ...], steps: int = 3) -> None:
        self.module, self.trainer, self.reader = module, trainer, reader
        self.image_shape, self.steps = image_shape, max(steps, 2)

    def __call__(self, micro_batch: int, checkpointing: bool) -> StepMeasurement:
        module = self.module
        peak, seconds = None, float("nan")
        with restored_afterwards(module, self.trainer):
            module.set_gradient_checkpointing(checkpointing)
            module.gan_step.accumulate = 1  # every call is a whole update: optimizer states are measured too
            images = torch.rand(micro_batch, *self.image_shape, device=module.device) * 2 - 1
            try:
                self.reader.start(module)
                times = []
                for _ in range(self.steps):
                    start = time.perf_counter()
                    probe_step(module, images)
                    self.reader.synchronize()
                    times.append(time.perf_counter() - start)
                peak, seconds = self.reader.peak_bytes(), statistics.median(times[1:])
            except torch.OutOfMemoryError:
                pass
        return self._agreed(peak, seconds)

    def _agreed(self, peak: int | None, seconds: float) -> StepMeasurement:
        """The worst of all processes (any out-of-memory counts), so every process plans alike."""
        if self.trainer.world_size == 1:
            return StepMeasurement(peak, seconds)
        values = torch.tensor([float(peak is None), float(peak or 0), seconds], dtype=torch.float64, device=self.module.device)
        worst = self.trainer.strategy.reduce(values, reduce_op=torch.distributed.ReduceOp.MAX)
        return StepMeasurement(None if worst[0] > 0 else int(worst[1]), float(worst[2]))


def probe_step(module, images: torch.Tensor) -> dict[str, torch.Tensor]:
    """One full-objective update of the run's `GanStep` through `ProbeEngine`, in the precision plugin's
    training context (autocast), as Lightning runs `training_step`."""
    images = in_layout(images, module.plan.channels_last)
    with module.trainer.precision_plugin.train_step_context():
        return module.gan_step(images, ProbeEngine(module), full_objective=True)


@contextmanager
def restored_afterwards(module, trainer: L.Trainer):
    """Steps run inside leave no trace: weights and buffers (local shards under FSDP) copied back,
    gradients and optimizer states dropped, the step's counters, the RNG and checkpointing restored."""
    networks = networks_with(module, "probe_restore")
    tensors = [t for n in networks for t in (*n.parameters(), *n.buffers())]
    saved = [_local(t).detach().to("cpu", copy=True) for t in tensors]
    step_state, rng, checkpointing = module.gan_step.snapshot(), capture_rng(), family_of(module.autoencoder).is_gradient_checkpointing(module.autoencoder)
    try:
        yield
    finally:
        with torch.no_grad():
            for tensor, value in zip(tensors, saved):
                _local(tensor).copy_(value)
        for network in networks:
            network.zero_grad(set_to_none=True)
        for optimizer in trainer.optimizers:
            optimizer.state.clear()
        module.gan_step.restore(step_state)
        restore_rng(rng)
        module.set_gradient_checkpointing(checkpointing)
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def _local(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.to_local() if isinstance(tensor, DTensor) else tensor
