"""The search for a memory plan (`MemoryPlan`): the fastest micro-batch, with or without gradient
checkpointing, whose measured peak stays under the budget; accumulation keeps the global batch.

Pure: the search needs only a way to measure (micro-batch, checkpointing) -> `StepMeasurement` (peak bytes
or out-of-memory, seconds per step), so it is tested with an injected one. The real measurement (training
steps of the run's own model) and the `memory.*` callback that applies the plan are `training.memory_budget`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import asdict, dataclass

from vaetrain.errors import ConfigError

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
class StepMeasurement:
    """One measured configuration: peak device memory (None: it ran out of memory) and step time."""

    peak_bytes: int | None
    seconds_per_step: float = float("nan")


MeasureSteps = Callable[[int, bool], StepMeasurement]


@dataclass(frozen=True)
class MemoryPlan:
    micro_batch: int
    gradient_checkpointing: bool
    accumulate: int
    peak_bytes: int
    images_per_second: float

    def as_dict(self) -> dict:
        return asdict(self)

    def describe(self, budget_bytes: int) -> str:
        return (
            f"micro-batch {self.micro_batch} x {self.accumulate} accumulation, gradient checkpointing "
            f"{'on' if self.gradient_checkpointing else 'off'}: peak {self.peak_bytes / 2**30:.2f} GiB of "
            f"{budget_bytes / 2**30:.2f} GiB, {self.images_per_second:.1f} img/s measured"
        )


def plan_memory(
    probe: MeasureSteps,
    budget_bytes: int,
    images_per_process: int,
    headroom: float = 0.1,
    *,
    checkpointing_available: bool = True,
    no_accumulation: str | None = None,
) -> MemoryPlan:
    """The fastest measured (micro-batch, checkpointing) whose peak stays under (1 - headroom) x budget.

    Micro-batches are the divisors of `images_per_process` (the global batch over the processes), so
    accumulation keeps the global batch exactly. For each checkpointing setting (off first) micro-batches
    are tried upward until one does not fit; checkpointing is tried only when, without it, the whole
    per-process batch does not fit in one micro-batch. Among the fitting ones the highest measured
    images/second wins; within 5 % of it, no checkpointing, then the larger micro-batch.
    `checkpointing_available` False (a family diffusers cannot checkpoint): never tried.
    `no_accumulation`: the setting that forbids accumulation (gradient normalisation): only the whole
    per-process batch is tried, with checkpointing if needed, and a one-line error names the setting.
    """
    limit = budget_bytes * (1.0 - headroom)
    candidates = [m for m in range(1, images_per_process + 1) if images_per_process % m == 0]
    if no_accumulation is not None:
        candidates = [images_per_process]
    fitting: list[MemoryPlan] = []
    smallest_need: int | None = None
    for checkpointing in (False, True) if checkpointing_available else (False,):
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
    if not fitting and no_accumulation is not None:
        raise ConfigError(
            f"memory.max_memory: {no_accumulation} needs the whole per-process batch ({images_per_process} images) in one "
            f"micro-batch (it normalises each backward pass's gradient, so accumulation would weaken it), and that does not "
            f"fit {limit / 2**30:.2f} GiB{' even with gradient checkpointing' if checkpointing_available else ''}; lower the "
            "batch size or data.resolution, or use model.loss.balance adaptive"
        )
    if not fitting:
        need = f"{smallest_need / 2**30:.2f} GiB" if smallest_need else "more than the device has"
        raise ConfigError(
            f"memory.max_memory: even micro-batch 1{' with gradient checkpointing' if checkpointing_available else ''} needs {need}, over "
            f"{limit / 2**30:.2f} GiB ({budget_bytes / 2**30:.2f} GiB less {headroom:.0%} headroom); lower "
            "data.resolution or use a smaller model"
        )
    best = max(plan.images_per_second for plan in fitting)
    close = [plan for plan in fitting if plan.images_per_second >= 0.95 * best]
    return max(close, key=lambda plan: (not plan.gradient_checkpointing, plan.micro_batch))
