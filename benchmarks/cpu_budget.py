"""A training run stopped after a budget of CPU seconds instead of wall-clock seconds: on a machine that other
jobs share, wall time measures the load, CPU time the work. `CpuBudget` is a Lightning callback `vaetrain fit`
takes as `--trainer.callbacks+=cpu_budget.CpuBudget --trainer.callbacks.seconds=N` (benchmarks/ on the
PYTHONPATH; `harness.train_for(..., cpu_seconds=N)` does both). It counts its own process's CPU time (every
thread; run with `data.num_workers=0` so decoding is counted too) from the start of training, stops after the
micro-batch that spends it, as Lightning's `max_time` timer does, and keeps what it spent in the checkpoint, so
a resumed run continues the same budget.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import lightning as L


class CpuBudget(L.Callback):
    """Stops training once `seconds` of CPU time are spent (`clock`: the process's CPU seconds, injectable)."""

    def __init__(self, seconds: float, clock: Callable[[], float] | None = None) -> None:
        if seconds <= 0:
            raise ValueError(f"CpuBudget: seconds must be positive, got {seconds}")
        self.seconds = float(seconds)
        self.clock = clock or time.process_time
        self.spent_before = 0.0  # by earlier processes of a resumed run
        self.started: float | None = None

    def spent(self) -> float:
        """CPU seconds this run has spent training, earlier processes included."""
        return self.spent_before + (self.clock() - self.started if self.started is not None else 0.0)

    def on_train_start(self, trainer: L.Trainer, pl_module) -> None:
        self.started = self.clock()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if self.spent() >= self.seconds:
            trainer.should_stop = True

    def state_dict(self) -> dict[str, float]:
        return {"spent": self.spent(), "seconds": self.seconds}

    def load_state_dict(self, state_dict: dict[str, float]) -> None:
        self.spent_before = float(state_dict["spent"])
