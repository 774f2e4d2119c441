"""Optimizer and LR-schedule settings, one block per network."""

from __future__ import annotations

import math
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

import torch
from diffusers.optimization import get_scheduler

from vaetrain.errors import ConfigError
from vaetrain.models.families import family_of
from vaetrain.training.networks import trainable_parameters


@dataclass(frozen=True)
class OptimizerConfig:
    """Adam or AdamW for one network. `warmup_steps` and the schedule count this optimizer's own steps.
    LDM's autoencoders use Adam with betas (0.5, 0.9) for both networks."""

    name: Literal["adam", "adamw"] = "adam"
    """adam (L2 penalty in the gradient) or adamw (decoupled weight decay)."""
    lr: float = 1e-4
    """Learning rate (before `model.optimizer.scale_lr` and `lr_scale`)."""
    betas: tuple[float, float] = (0.5, 0.9)
    """Adam's (beta1, beta2); vqgan-training: (0.9, 0.95)."""
    eps: float = 1e-8
    """Adam's epsilon."""
    amsgrad: bool = False
    """AMSGrad's running maximum of the second moment (TAESD's author: Adam 3e-4, betas (0.9, 0.9), amsgrad)."""
    weight_decay: float = 0.0
    """Weight decay (vqgan-training: 1e-3 with adamw)."""
    gradient_clip_norm: float | None = None
    """Clip this network's gradient to this L2 norm (after unscaling); None: no clipping."""
    scheduler: Literal["constant", "constant_with_warmup", "linear", "cosine", "cosine_with_min_lr"] = "constant"
    """diffusers' schedule over the run's steps (model.training.schedule_steps or trainer.max_steps);
    cosine_with_min_lr: RAE's warm-up from 0 and cosine decay to `min_lr_rate` x lr (its `final_lr`)."""
    min_lr_rate: float | None = None
    """cosine_with_min_lr: the rate the cosine ends at, as a fraction of lr (RAE: 2e-5 / 2e-4 = 0.1)."""
    warmup_steps: int = 0
    """Linear warm-up steps of the schedule."""
    lr_scale: Literal["none", "width"] = "none"
    """width: lr divided by the autoencoder's base width (block_out_channels[0]) for every parameter but the
    input convolutions under conv_in_lr (vqgan-training's optimizer_G: `learning_rate_vae / vae_ch`). Generator only."""
    conv_in_lr: float | None = None
    """Learning rate of the encoder's and the decoder's input convolutions (vqgan-training's `"conv_in" in n`:
    1e-4); None: as the rest. Generator only; refused for families without such layers (AutoencoderTiny)."""

    def __post_init__(self) -> None:
        if self.lr <= 0:
            raise ConfigError(f"model.optimizer.*.lr must be positive, got {self.lr}")
        if (self.scheduler == "cosine_with_min_lr") != (self.min_lr_rate is not None):
            raise ConfigError("model.optimizer.*.min_lr_rate goes with scheduler: cosine_with_min_lr (and that scheduler needs it)")
        if self.min_lr_rate is not None and not 0 <= self.min_lr_rate <= 1:
            raise ConfigError(f"model.optimizer.*.min_lr_rate must be in [0, 1], got {self.min_lr_rate}")
        if self.gradient_clip_norm is not None and self.gradient_clip_norm <= 0:
            raise ConfigError(f"model.optimizer.*.gradient_clip_norm must be positive or null, got {self.gradient_clip_norm}")


def parameter_groups(
    named_parameters: Iterable[tuple[str, torch.nn.Parameter]],
    config: OptimizerConfig,
    width: int,
    scale: float = 1.0,
    conv_in: tuple[str, ...] = ("encoder.conv_in.", "decoder.conv_in."),
) -> list[dict]:
    """The trainable parameters in groups with their learning rates: `lr * scale` (divided by `width` under
    `lr_scale: width`), and `conv_in_lr` for the input convolutions (names starting with a `conv_in`
    prefix: the family's `conv_in_prefixes`) when set."""
    if config.conv_in_lr is not None and not conv_in:
        raise ConfigError(
            "model.optimizer.generator.conv_in_lr: this autoencoder family has no conv_in layers (vqgan-training's rule names AutoencoderKL's); leave it null"
        )
    lr = config.lr * scale / (width if config.lr_scale == "width" else 1)
    main, inputs = [], []
    for name, parameter in named_parameters:
        if parameter.requires_grad:
            (inputs if config.conv_in_lr is not None and name.startswith(conv_in) else main).append(parameter)
    groups = [{"params": main, "lr": lr}]
    if inputs:
        groups.append({"params": inputs, "lr": config.conv_in_lr})
    return groups


def lr_multiplier(optimizers, images_per_step: int, report: bool) -> float:
    """`model.optimizer.scale_lr` (LDM's main.py: `accumulate_grad_batches * ngpu * bs * base_lr`): the
    learning rates are per image of the global batch; printed when `report`. 1 otherwise."""
    if not optimizers.scale_lr:
        return 1.0
    if report:
        rates = ", ".join(
            f"{name} {c.lr:g} -> {c.lr * images_per_step:g}" for name, c in (("generator", optimizers.generator), ("discriminator", optimizers.discriminator))
        )
        print(f"vaetrain: model.optimizer.scale_lr: learning rates x {images_per_step} images per step ({rates})", file=sys.stderr)
    return float(images_per_step)


def build_optimizer(groups: list[dict], config: OptimizerConfig) -> torch.optim.Optimizer:
    """Fused (one kernel for all parameters) when they live on a GPU; the default multi-tensor path on CPU."""
    parameters = [p for group in groups for p in group["params"]]
    optimizer_class = torch.optim.AdamW if config.name == "adamw" else torch.optim.Adam
    fused = bool(parameters) and all(p.device.type == "cuda" for p in parameters)
    return optimizer_class(groups, betas=tuple(config.betas), eps=config.eps, weight_decay=config.weight_decay, amsgrad=config.amsgrad, fused=fused or None)


def build_scheduler(optimizer: torch.optim.Optimizer, config: OptimizerConfig, total_steps: int) -> torch.optim.lr_scheduler.LRScheduler:
    """diffusers' schedules; `total_steps` (for linear/cosine decay) is the run's generator-step budget.
    cosine_with_min_lr is bytetriper/RAE's (`src/utils/optim_utils.py`, `build_scheduler`, type cosine with
    `warmup_from_zero` and `final_lr`): lr x (step + 1) / warmup during the warm-up, then lr x (r + (1 - r)
    (1 + cos(pi progress)) / 2) with r = min_lr_rate, and r x lr once `total_steps` is reached."""
    if config.scheduler == "cosine_with_min_lr":
        warmup, end, rate = config.warmup_steps, max(total_steps, config.warmup_steps + 1), config.min_lr_rate

        def factor(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            if step >= end:
                return rate
            return rate + (1 - rate) * 0.5 * (1 + math.cos(math.pi * (step - warmup) / (end - warmup)))

        return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    return get_scheduler(config.scheduler, optimizer, num_warmup_steps=config.warmup_steps, num_training_steps=max(total_steps, config.warmup_steps + 1))


def gan_optimizers(module) -> tuple[list[torch.optim.Optimizer], list[dict]]:
    """Lightning's `configure_optimizers` for the module: the generator's and the discriminator's optimizers
    over their networks' trainable parameters (`training.networks`: roles `generator`, `discriminator`), with
    their learning-rate groups and step schedules, then one per unit network with the role `trained`, with
    the settings its unit gives (`Feature.optimizer_config`; not scaled by `scale_lr`). `model.optimizer.
    scale_lr`: LDM's accumulate x processes x micro-batch (the global batch)."""
    trainer = module.trainer
    micro_batch = module.plan.micro_batch or 1
    scale = lr_multiplier(module.optimizer_config, module.accumulate * trainer.world_size * micro_batch, trainer.is_global_zero)
    configs = (module.optimizer_config.generator, module.optimizer_config.discriminator)
    family = family_of(module.autoencoder)
    width = family.width(module.autoencoder)
    conv_in = tuple(f"autoencoder.{prefix}" for prefix in family.conv_in_prefixes)
    groups = [
        parameter_groups(trainable_parameters(module, "generator"), configs[0], width, scale, conv_in),
        parameter_groups(trainable_parameters(module, "discriminator"), configs[1], width, scale),
    ]
    configs = list(configs)
    for feature in module.features:
        for name in feature.trained_networks():
            config = feature.optimizer_config(name)
            groups.append(parameter_groups(trainable_parameters(module, name), config, width))
            configs.append(config)
    optimizers = [build_optimizer(g, c) for g, c in zip(groups, configs)]
    horizon = module.training_config.schedule_steps or max(module.trainer.max_steps, 1)
    schedulers = [{"scheduler": build_scheduler(o, c, horizon), "interval": "step"} for o, c in zip(optimizers, configs)]
    return optimizers, schedulers
