"""The engines a `GanStep` runs on: how its backward passes and optimizer steps are carried out.

- `LightningEngine`: training. `manual_backward` (precision plugin, grad scaler, DDP's gradient
  all-reduce), `toggle_model` (only the stepping network takes gradients; no all-reduce until a window
  closes), the generator's step through `LightningOptimizer.step` (so `trainer.global_step` counts
  generator steps), the discriminator's and a unit network's (role `trained`) through the strategy
  (precision plugin and hooks, but not counted), then each network's LR scheduler.
- `ProbeEngine`: the memory probe. The same path, except that it never all-reduces what it can avoid (so
  one process running out of memory cannot leave another waiting; DDP's buckets are allocated when the
  model is wrapped, so the measured memory still holds them), steps no scheduler and counts no step.
- `PlainEngine`: no Lightning: `loss.backward()` and plain optimizers (or none), for FLOP counting on the
  meta device and for unit tests of the step.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, contextmanager

import torch
from torch import nn

from vaetrain.training.interfaces import Trained
from vaetrain.training.networks import optimizer_names, trainable_parameters
from vaetrain.training.step import GanStep


class LightningEngine:
    def __init__(self, module) -> None:
        self.module = module

    @property
    def world_size(self) -> int:
        return self.module.trainer.world_size

    def backward(self, loss: torch.Tensor) -> None:
        self.module.manual_backward(loss)

    def accumulating(self, network: Trained, sync: bool) -> AbstractContextManager:
        return self._optimizer(network).toggle_model(sync_grad=sync)

    def optimizer_step(self, network: Trained) -> None:
        optimizer = self._optimizer(network)
        if network == "generator":
            optimizer.step()
        else:  # `LightningOptimizer.step` would add to trainer.global_step and divide every step-based setting
            self.module.trainer.strategy.optimizer_step(optimizer.optimizer, closure=_no_closure)
        schedulers = self.module.lr_schedulers()
        (schedulers[self._index(network)] if isinstance(schedulers, list) else schedulers).step()

    def zero_grad(self, network: Trained) -> None:
        self._optimizer(network).zero_grad(set_to_none=True)

    def mean_over_processes(self, tensor: torch.Tensor) -> torch.Tensor:
        return self.module.trainer.strategy.reduce(tensor, reduce_op="mean")

    def gather(self, tensor: torch.Tensor) -> torch.Tensor:
        return self.module.trainer.strategy.all_gather(tensor)

    def loss_scale(self) -> float:
        scaler = getattr(self.module.trainer.precision_plugin, "scaler", None)
        return float(scaler.get_scale()) if scaler is not None and scaler.is_enabled() else 1.0

    def _index(self, network: Trained) -> int:
        return optimizer_names(self.module).index(network)

    def _optimizer(self, network: Trained):
        return self.module.optimizers()[self._index(network)]


class ProbeEngine(LightningEngine):
    world_size = 1  # each process measures alone: no adaptive-weight all-reduce, no sample counting across ranks

    def accumulating(self, network: Trained, sync: bool) -> AbstractContextManager:
        return self._optimizer(network).toggle_model(sync_grad=False)

    def optimizer_step(self, network: Trained) -> None:
        self.module.trainer.strategy.optimizer_step(self._optimizer(network).optimizer, closure=_no_closure)


class PlainEngine:
    """`scaler`: a `torch.amp.GradScaler` the backward passes and optimizer steps go through, as Lightning's
    fp16 precision plugin does (unscale, `prepare_gradients`, step, update); needs the optimizers."""

    world_size = 1

    def __init__(self, step: GanStep, optimizers: dict[str, torch.optim.Optimizer] | None = None, scaler: torch.amp.GradScaler | None = None) -> None:
        self.step = step
        self.optimizers = optimizers or {}
        self.scaler = scaler

    def backward(self, loss: torch.Tensor) -> None:
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()

    def loss_scale(self) -> float:
        return float(self.scaler.get_scale()) if self.scaler is not None else 1.0

    def gather(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor[None]

    @contextmanager
    def accumulating(self, network: Trained, sync: bool):
        networks = self.step.networks
        others = [p for name in optimizer_names(networks) if name != network for _, p in trainable_parameters(networks, name)]
        with _no_gradients(others):
            yield

    def optimizer_step(self, network: Trained) -> None:
        if self.scaler is None:
            self.step.prepare_gradients(network)
            if network in self.optimizers:
                self.optimizers[network].step()
            return
        optimizer = self.optimizers[network]
        self.scaler.unscale_(optimizer)
        self.step.prepare_gradients(network)
        self.scaler.step(optimizer)
        self.scaler.update()

    def zero_grad(self, network: Trained) -> None:
        for _, parameter in trainable_parameters(self.step.networks, network):
            parameter.grad = None

    def mean_over_processes(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor


@contextmanager
def _no_gradients(parameters: list[nn.Parameter]):
    saved = [(p, p.requires_grad) for p in parameters]
    for parameter, _ in saved:
        parameter.requires_grad_(False)
    try:
        yield
    finally:
        for parameter, flag in saved:
            parameter.requires_grad_(flag)


def _no_closure() -> None:
    return None
