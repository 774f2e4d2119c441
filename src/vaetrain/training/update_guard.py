"""The update guard of the one step: the gradient norm measured after unscaling, a non-finite update
skipped (weights and optimizer moments unchanged) and counted, clipping, and the stop after too many skipped
updates in a row."""

from __future__ import annotations

import torch
from torch import nn
from torch.distributed.tensor import DTensor

from vaetrain.errors import TrainingDiverged
from vaetrain.plan import StepCounters


class UpdateGuard:
    """`prepare` runs after unscaling, before a network's optimizer steps: it records the gradient norm; a
    non-finite one (or any in a window whose generator update was already skipped) drops the gradients, so
    the optimizer leaves weights and moments unchanged; otherwise it clips to the network's norm, if set.
    `end_window` counts a skipped window and raises after `max_consecutive_skips` in a row."""

    def __init__(self, clip_norm: dict[str, float | None] | None, max_consecutive_skips: int) -> None:
        self.clip_norm = clip_norm or {}
        self.max_consecutive_skips = max_consecutive_skips
        self.norms: dict[str, torch.Tensor] = {}
        self.skipping = False

    def prepare(self, network: str, parameters: list[nn.Parameter]) -> None:
        parameters = [p for p in parameters if p.grad is not None]
        norm = total_norm(parameters)
        self.norms[network] = norm.detach()
        if self.skipping or not bool(torch.isfinite(norm)):
            self.skipping = True
            for parameter in parameters:
                parameter.grad = None
            return
        clip = self.clip_norm.get(network)
        if clip:
            torch.nn.utils.clip_grads_with_norm_(parameters, clip, norm)

    def end_window(self, counters: StepCounters) -> None:
        if not self.skipping:
            counters.consecutive_skips = 0
            return
        self.skipping = False
        counters.skipped_updates += 1
        counters.consecutive_skips += 1
        if counters.consecutive_skips >= self.max_consecutive_skips:
            norms = ", ".join(f"{k} {float(v):.3g}" for k, v in self.norms.items())
            raise TrainingDiverged(
                f"{counters.consecutive_skips} updates in a row had non-finite gradients (norms: {norms}) and were "
                f"skipped, at generator step {counters.generator_steps}; the last checkpoint holds the last good "
                "weights (lower the learning rate, set model.optimizer.*.gradient_clip_norm, or use 32-bit precision; "
                "model.training.max_consecutive_skips sets the limit)"
            )


def total_norm(parameters: list[nn.Parameter]) -> torch.Tensor:
    """The L2 norm of all gradients together in fp32; under FSDP2 over all shards (every process gets it)."""
    if not parameters:
        return torch.zeros(())
    norm = torch.nn.utils.get_total_norm([p.grad for p in parameters], foreach=True)
    if isinstance(norm, DTensor):
        norm = norm.full_tensor()
    return norm.float()
