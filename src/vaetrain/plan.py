"""The run's plan, with one owner: the step's counters, the accumulation, the micro-batch, the per-phase
micro-batches, gradient checkpointing and the memory plan's figures, in one `RunPlan`.

Written in one order: the training module creates it from the configs, its set-up adds what the trainer and
the data decide (processes, the configured micro-batch, the accumulation a global batch needs) and hands it
to the data module; then only the memory budget changes it. Read by the step (counters, accumulation), the
data module (micro-batch, phase micro-batches, accumulation for a resolution schedule's global batch) and
the checkpoint record. Nothing learns these from the Lightning module.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class StepCounters:
    """Saved in every checkpoint. `generator_steps` equals Lightning's `trainer.global_step`."""

    generator_steps: int = 0
    discriminator_steps: int = 0
    micro_batches: int = 0
    samples_seen: int = 0
    skipped_updates: int = 0  # accumulated batches whose update was dropped (non-finite gradient)
    consecutive_skips: int = 0


@dataclass
class RunPlan:
    """See the module docstring. `window_origin`: the micro-batch at which the current accumulation began
    (accumulated batches are counted from there)."""

    counters: StepCounters = field(default_factory=StepCounters)
    accumulate: int = 1
    window_origin: int = 0
    micro_batch: int | None = None
    """Images per process per micro-batch; None until set-up reads the data module's."""
    phase_batch_sizes: list[int] | None = None
    """Per resolution phase, when a memory budget plans them."""
    processes: int = 1
    gradient_checkpointing: bool = False
    channels_last: bool = False
    """Weights and batches stored NHWC (set at set-up from `speed.channels_last` and the device)."""
    memory: dict[str, Any] = field(default_factory=dict)
    """The memory budget's figures (empty without one)."""
    longest_clip: int | None = None
    """The most frames of any clip trained on, this run and the runs it resumed (the longest of `data.frames`);
    None: images."""

    def resume(self, counters: StepCounters, recorded: dict[str, Any]) -> None:
        """The counters and the longest clip of the checkpoint's record (`as_record`) a run resumes from."""
        self.counters = counters
        self.trained_on_clips(recorded.get("longest_clip"))

    def trained_on_clips(self, frames: int | None) -> None:
        if frames:
            self.longest_clip = max(self.longest_clip or 0, int(frames))

    def accumulate_from_here(self, micro_batches: int) -> None:
        """`micro_batches` per update from the next micro-batch on (set between updates)."""
        self.accumulate, self.window_origin = micro_batches, self.counters.micro_batches

    def as_record(self) -> dict[str, Any]:
        """What a checkpoint records of it (the counters are recorded apart)."""
        return {
            "micro_batch": self.micro_batch,
            "accumulate": self.accumulate,
            "processes": self.processes,
            "gradient_checkpointing": self.gradient_checkpointing,
            "memory": self.memory or None,
            "longest_clip": self.longest_clip,
        }


def longest_clip(frames: int | list[int] | tuple[int, ...] | None) -> int | None:
    """The longest clip of `data.frames`: the number, or the largest of a list of lengths; None for images (0)."""
    if isinstance(frames, (list, tuple)):
        frames = max((int(f) for f in frames), default=0)
    return int(frames) if frames else None
