"""What the training module does when Lightning sets a run up, before any step: the strategy's own
preparation and atomic checkpoint writing, TF32, the memory layout, synchronised batch norm, each unit told
its rank, the data checked against the model, and the run's plan completed (processes, micro-batch, the
accumulation a global batch needs) and handed to the data module."""

from __future__ import annotations

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

from vaetrain.models.discriminator import synchronise_batch_norm
from vaetrain.plan import longest_clip
from vaetrain.training.checkpoint_io import AtomicCheckpointIO
from vaetrain.training.config import accumulation_for
from vaetrain.training.networks import set_channels_last
from vaetrain.training.strategies import prepare_strategy


def set_up(module) -> None:
    trainer = module.trainer
    strategy = trainer.strategy
    prepare_strategy(strategy)
    if type(strategy.checkpoint_io) is TorchCheckpointIO:  # another CheckpointIO plugin, if given, is kept
        strategy.checkpoint_io = AtomicCheckpointIO()
    device = strategy.root_device
    if module.speed_config.tf32 and device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    plan = module.plan
    plan.channels_last = module.speed_config.use_channels_last(device.type)
    set_channels_last(module, plan.channels_last)
    module.discriminator = synchronise_batch_norm(module.discriminator, trainer.world_size, device.type)
    for feature in module.features:
        feature.place(trainer.global_rank, trainer.world_size)
    datamodule = getattr(trainer, "datamodule", None)
    if datamodule is not None and hasattr(datamodule, "check_resolution"):
        module.check_data(datamodule)
    plan.processes = trainer.world_size
    if datamodule is not None:
        plan.micro_batch = plan.micro_batch or getattr(datamodule, "batch_size", None)
        plan.longest_clip = longest_clip(getattr(datamodule, "frames", None))
        datamodule.plan = plan  # handed over: the data module reads the micro-batch and accumulation from it
    if module.training_config.global_batch_size and datamodule is not None:
        module.gan_step.accumulate = accumulation_for(module.training_config.global_batch_size, trainer.world_size, plan.micro_batch)
