"""A training feature is one unit plus one registry line: a toy unit with a trained network, a loss term, a
committed buffer and a refusal trains, checkpoints, restores after the memory probe and refuses, without
any change to the step, the module or the preflight checks."""

import pytest
import torch
from torch import nn

from tests.conftest import tiny_module, tiny_trainer
from vaetrain.errors import ConfigError
from vaetrain.losses.alignment import AlignmentConfig
from vaetrain.losses.distillation import DistillationConfig
from vaetrain.losses.equivariance import EquivarianceConfig
from vaetrain.training import features
from vaetrain.training.features.base import Feature, network
from vaetrain.training.module import AutoencoderModule


class Tally(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("commits", torch.zeros((), dtype=torch.long))
        self.register_buffer("discards", torch.zeros((), dtype=torch.long))


class Toy(Feature):
    name = "toy"
    networks = (
        network("toy_head", "generator probe_restore", "a trained toy head"),
        network("toy_tally", "probe_restore", "finite and skipped updates counted"),
    )

    @classmethod
    def wanted(cls, setup, autoencoder) -> bool:
        return True

    def build(self, holder, autoencoder) -> None:
        super().build(holder, autoencoder)
        holder.toy_head = nn.Linear(4, 1)
        holder.toy_tally = Tally()

    def conflicts(self, run):
        if "latent_noise" in run.active:
            yield "the toy unit does not apply with model.loss.latent_noise"

    def on_latents(self, stage, factor) -> None:
        if stage.grad:  # pull the head's output on the mean latent channel vector towards 1
            pooled = stage.latents.float().mean(dim=(2, 3))
            stage.extra.append(0.1 * (self.holder.toy_head(pooled) - 1).pow(2).mean())

    def commit(self, network: str, update) -> None:
        if network == "generator":
            tally = self.holder.toy_tally
            (tally.commits if update.finite else tally.discards).add_(1)


def test_a_toy_unit_trains_checkpoints_and_refuses_through_one_registry_line(monkeypatch, datamodule):
    monkeypatch.setattr(features, "FEATURES", features.FEATURES + (Toy,))
    module = tiny_module()
    before = module.toy_head.weight.detach().clone()
    tiny_trainer(max_steps=3).fit(module, datamodule)

    assert not torch.equal(module.toy_head.weight, before)  # in the generator's optimizer, its loss term reached it
    assert int(module.toy_tally.commits) == 3 and int(module.toy_tally.discards) == 0
    keys = module.state_dict().keys()
    assert "toy_tally.commits" in keys and "toy_head.weight" in keys  # checkpointed with the module
    assert {id(p) for p in module.toy_head.parameters()} <= {id(p) for p in module.gan_step._parameters("generator")}

    with pytest.raises(ConfigError, match="the toy unit does not apply with model.loss.latent_noise"):
        tiny_module(loss={"latent_noise": 0.1})


def test_inactive_units_leave_their_networks_none():
    module = tiny_module()
    names = {declared.name for unit in features.FEATURES for declared in unit.networks}
    assert names >= {"codebook", "teacher", "alignment_projection", "alignment_encoder", "lecam_anchors"}
    assert all(getattr(module, name) is None for name in names)
    assert [feature.name for feature in module.features] == []


@pytest.mark.parametrize("term", [{"alignment": AlignmentConfig(weight=0.1, encoder="random-small")}, {"equivariance": EquivarianceConfig(probability=0.5)}])
def test_a_unit_on_the_encoders_latents_is_refused_beside_one_that_replaces_the_encoder(term):
    """Alignment and EQ-VAE act on the encoder's latents; distillation's decoder reads the teacher's instead
    (refused before the teacher loads: the id below does not exist)."""
    (setting,) = term
    with pytest.raises(ConfigError, match=f"model.loss.{setting} does not apply beside model.loss.distillation"):
        tiny_module(loss=term | {"distillation": DistillationConfig(teacher="no/such-teacher")})


def test_a_network_no_unit_declares_is_refused():
    with pytest.raises(ConfigError, match="no network is named teachr"):
        AutoencoderModule(teachr=nn.Identity())
