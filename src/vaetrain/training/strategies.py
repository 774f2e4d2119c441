"""Which Lightning strategies train this module, for the command line and the Python API alike.

- `ddp`: DDP must find unused parameters, since each optimizer's step leaves the other network without
  gradients. `vaetrain fit --trainer.strategy ddp` resolves to `ddp_find_unused_parameters_true`, and a
  Trainer made in Python with plain `"ddp"` (or `DDPStrategy()`) is switched to it when the module is set
  up (before the model is wrapped), with a note.
- `fsdp`: FSDP2 (`fully_shard`) through `FullyShardedStrategy`, registered as `fsdp2`. Lightning's own
  `fsdp` (FSDP1) is CUDA-only and hides parameters in flat buffers the adaptive weight cannot read: the
  module refuses it in one line.
"""

from __future__ import annotations

import sys
from datetime import timedelta

from lightning.fabric.plugins.collectives.torch_collective import default_pg_timeout
from lightning.pytorch.strategies import DDPStrategy, FSDPStrategy, ModelParallelStrategy, Strategy, StrategyRegistry

from vaetrain.errors import ConfigError

STRATEGY_ALIASES = {"ddp": "ddp_find_unused_parameters_true", "fsdp": "fsdp2"}


class FullyShardedStrategy(ModelParallelStrategy):
    """FSDP2 over all processes (data parallel = world size, tensor parallel = 1), full-state-dict
    checkpoints (one file, gathered on rank 0, that resumes sharded or not on another number of processes)."""

    def __init__(
        self, save_distributed_checkpoint: bool = False, process_group_backend: str | None = None, timeout: timedelta | None = default_pg_timeout
    ) -> None:
        super().__init__(
            data_parallel_size="auto",
            tensor_parallel_size=1,
            save_distributed_checkpoint=save_distributed_checkpoint,
            process_group_backend=process_group_backend,
            timeout=timeout,
        )

    def setup_environment(self) -> None:
        self._data_parallel_size = self.num_nodes * self.num_processes
        super().setup_environment()


if "fsdp2" not in StrategyRegistry:
    StrategyRegistry.register("fsdp2", FullyShardedStrategy, description="FSDP2 over all processes, full-state-dict checkpoints (vaetrain)")


def resolve_strategy(name: str) -> str:
    """`ddp` and `fsdp` become the strategies this module needs; other names pass unchanged."""
    return STRATEGY_ALIASES.get(name, name)


def prepare_strategy(strategy: Strategy) -> None:
    """Called from the module's `setup`, before the strategy wraps the model."""
    if isinstance(strategy, FSDPStrategy):
        raise ConfigError("trainer.strategy: Lightning's FSDP (FSDP1) cannot train this module; use fsdp (FSDP2, `fsdp2`)")
    if isinstance(strategy, DDPStrategy) and not strategy._ddp_kwargs.get("find_unused_parameters"):
        # DDPStrategy keeps its DistributedDataParallel arguments here until `setup` wraps the model
        strategy._ddp_kwargs["find_unused_parameters"] = True
        if strategy.global_rank == 0:
            print("vaetrain: DDP with find_unused_parameters=True (each optimizer leaves the other network without gradients)", file=sys.stderr)
