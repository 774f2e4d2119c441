import pytest
import torch

from tests.conftest import tiny_module, tiny_trainer
from vaetrain.training.optim import OptimizerConfig


def test_bf16_mixed_keeps_fp32_master_weights_and_ema(datamodule):
    module = tiny_module(loss={"disc_start_step": 1})
    before = [p.detach().clone() for p in module.autoencoder.parameters()]
    tiny_trainer(max_steps=2, precision="bf16-mixed").fit(module, datamodule)
    for network in (module.autoencoder, module.discriminator, module.ema):
        assert all(p.dtype == torch.float32 for p in network.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(before, module.autoencoder.parameters()))
    assert module.counters.skipped_updates == 0  # no update lost to a non-finite bf16 gradient


def test_each_schedule_counts_its_own_optimizer_steps(datamodule):
    """Linear decay to 0 over trainer.max_steps generator steps; the discriminator started later."""
    module = tiny_module(loss={"disc_start_step": 2}, optimizer=OptimizerConfig(lr=1e-3, scheduler="linear"))
    trainer = tiny_trainer(max_steps=4)
    trainer.fit(module, datamodule)
    generator_optimizer, discriminator_optimizer = trainer.optimizers
    assert module.counters.generator_steps == 4 and module.counters.discriminator_steps == 2
    assert generator_optimizer.param_groups[0]["lr"] == pytest.approx(0.0)
    assert discriminator_optimizer.param_groups[0]["lr"] == pytest.approx(1e-3 * (4 - 2) / 4)
