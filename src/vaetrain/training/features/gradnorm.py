"""Gradient normalisation as a unit (`model.loss.balance: gradnorm`, vqgan-training's; the balancing itself is
in `losses.objective`): it refuses accumulation, since it normalises each backward pass's gradient, so k
micro-batches would train it sqrt(k) weaker; the memory planner reads the same refusal."""

from __future__ import annotations

from torch import nn

from vaetrain.training.features.base import Feature, Setup

SETTING = "model.loss.balance=gradnorm"


class GradientNormalisation(Feature):
    name = "gradnorm"
    no_accumulation = SETTING

    @classmethod
    def wanted(cls, setup: Setup, autoencoder: nn.Module) -> bool:
        return setup.loss.balance == "gradnorm"

    def refuse_accumulation(self, micro_batches: int) -> str | None:
        if micro_batches <= 1:
            return None
        return (
            f"{SETTING} cannot accumulate gradients ({micro_batches} micro-batches per update, from "
            "model.training.accumulate_grad_batches or global_batch_size): it normalises each backward pass's gradient, so "
            "accumulation would weaken it; give each process its whole batch (data.batch_size) or use balance adaptive"
        )
