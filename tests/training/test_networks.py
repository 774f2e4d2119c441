"""Networks are declared once (`training.networks.NETWORKS`): a new member with roles is honoured by every
consumer — channels-last, compilation, the optimizers, the step's gradient guard, the checkpoint's frozen
filter and the memory probe's restore — without touching them (FSDP sharding reads the same roles; the
distributed tests run it)."""

import torch
from torch import nn

from tests.conftest import tiny_module, tiny_trainer
from vaetrain.training import networks
from vaetrain.training.memory_budget import restored_afterwards


def test_a_network_declared_once_is_honoured_by_every_consumer(monkeypatch):
    extra = (
        networks.Network("extra_trained", frozenset({"generator", "channels_last", "compile", "probe_restore"}), "a test network"),
        networks.Network("extra_frozen", frozenset({"frozen"}), "a frozen test network"),
    )
    monkeypatch.setattr(networks, "NETWORKS", networks.NETWORKS + extra)
    module = tiny_module()
    module.extra_trained, module.extra_frozen = nn.Conv2d(3, 3, 3), nn.Linear(2, 2).requires_grad_(False)

    networks.set_channels_last(module, True)
    assert module.extra_trained.weight.is_contiguous(memory_format=torch.channels_last)

    compiled = []
    monkeypatch.setattr(nn.Module, "compile", lambda self, **kwargs: compiled.append(self))
    networks.compile_networks(module)
    assert module.extra_trained in compiled and module.autoencoder.encoder in compiled and module.extra_frozen not in compiled

    trainer = tiny_trainer(max_steps=1)
    module.trainer = trainer
    (generator, discriminator), _ = module.configure_optimizers()
    in_generator = {id(p) for group in generator.param_groups for p in group["params"]}
    assert {id(p) for p in module.extra_trained.parameters()} <= in_generator
    assert not {id(p) for p in module.extra_trained.parameters()} & {id(p) for group in discriminator.param_groups for p in group["params"]}
    assert {id(p) for p in module.extra_trained.parameters()} <= {id(p) for p in module.gan_step._parameters("generator")}

    keys = module.state_dict().keys()
    assert any(k.startswith("extra_trained.") for k in keys) and not any(k.startswith("extra_frozen.") for k in keys)

    trainer.strategy._optimizers = [generator, discriminator]
    before = module.extra_trained.weight.detach().clone()
    with restored_afterwards(module, trainer):
        with torch.no_grad():
            module.extra_trained.weight.add_(1.0)
    assert torch.equal(module.extra_trained.weight, before)
