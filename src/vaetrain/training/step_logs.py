"""What the training module logs of each micro-batch: the step's values, throughput and both learning rates
(the progress bar shows throughput, the total loss and the generator step)."""

from __future__ import annotations

import time

SHOWN = {"img_per_s", "train/total", "steps/generator"}


class StepLogs:
    def __init__(self) -> None:
        self._last_batch_time: float | None = None

    def __call__(self, module, logs: dict, batch_size: int) -> None:
        now = time.perf_counter()
        if self._last_batch_time is not None:
            logs["img_per_s"] = batch_size * module.trainer.world_size / max(now - self._last_batch_time, 1e-9)
        self._last_batch_time = now
        optimizers = module.optimizers()
        logs |= {"lr/generator": optimizers[0].param_groups[0]["lr"], "lr/discriminator": optimizers[1].param_groups[0]["lr"]}
        module.log_dict({k: v for k, v in logs.items() if k in SHOWN}, prog_bar=True, batch_size=batch_size)
        module.log_dict({k: v for k, v in logs.items() if k not in SHOWN}, batch_size=batch_size)
