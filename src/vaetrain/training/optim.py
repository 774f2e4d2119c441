"""Optimizer and LR-schedule settings, one block per network."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

import torch
from diffusers.optimization import get_scheduler


@dataclass(frozen=True)
class OptimizerConfig:
    """Adam or AdamW for one network. `warmup_steps` and the schedule count this optimizer's own steps.

    LDM's autoencoders use Adam with betas (0.5, 0.9) for both networks.
    """

    name: Literal["adam", "adamw"] = "adam"
    lr: float = 1e-4
    betas: tuple[float, float] = (0.5, 0.9)
    eps: float = 1e-8
    weight_decay: float = 0.0
    gradient_clip_norm: float | None = None
    scheduler: Literal["constant", "constant_with_warmup", "linear", "cosine"] = "constant"
    warmup_steps: int = 0


def build_optimizer(parameters: Iterable[torch.nn.Parameter], config: OptimizerConfig) -> torch.optim.Optimizer:
    """Fused (one kernel for all parameters) when they live on a GPU; the default multi-tensor path on CPU."""
    parameters = list(parameters)
    optimizer_class = torch.optim.AdamW if config.name == "adamw" else torch.optim.Adam
    fused = bool(parameters) and all(p.device.type == "cuda" for p in parameters)
    return optimizer_class(
        parameters, lr=config.lr, betas=tuple(config.betas), eps=config.eps, weight_decay=config.weight_decay, fused=fused or None
    )


def build_scheduler(
    optimizer: torch.optim.Optimizer, config: OptimizerConfig, total_steps: int
) -> torch.optim.lr_scheduler.LRScheduler:
    """diffusers' schedules; `total_steps` (for linear/cosine decay) is the run's generator-step budget."""
    return get_scheduler(
        config.scheduler,
        optimizer,
        num_warmup_steps=config.warmup_steps,
        num_training_steps=max(total_steps, config.warmup_steps + 1),
    )
