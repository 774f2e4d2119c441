"""The fast paths compute what the plain path computes: same losses within float rounding."""

import copy

import lightning as L
import pytest
import torch

from tests.conftest import tiny_module, tiny_trainer
from vaetrain.losses.gan import discriminator_loss
from vaetrain.training.precision import default_precision

LOSSES = ("train/total", "train/reconstruction", "train/perceptual", "train/kl", "train/adversarial", "train/discriminator")


class RecordLosses(L.Callback):
    def __init__(self) -> None:
        self.rows: list[dict[str, float]] = []

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.rows.append({k: float(trainer.callback_metrics[k]) for k in LOSSES})


def _train(datamodule, steps: int = 3, **speed) -> tuple[list[dict[str, float]], torch.Tensor, torch.nn.Module]:
    module = tiny_module(loss={"disc_start_step": 0}, speed=speed)
    recorder = RecordLosses()
    tiny_trainer(max_steps=steps, callbacks=[recorder]).fit(module, datamodule)
    weights = torch.cat([p.detach().flatten() for p in (*module.autoencoder.parameters(), *module.discriminator.parameters())])
    return recorder.rows, weights, module


def _assert_same(rows, reference_rows, weights, reference_weights) -> None:
    assert len(rows) == len(reference_rows) == 3
    for row, reference in zip(rows, reference_rows):
        for key in LOSSES:
            assert row[key] == pytest.approx(reference[key], rel=1e-4, abs=1e-6), key
    # Adam divides by sqrt(v): a parameter whose gradient is ~0 moves by up to lr (1e-3) on rounding noise
    # alone, so weights are compared to a third of one step; a real difference moves every weight.
    torch.testing.assert_close(weights, reference_weights, rtol=0, atol=3e-4)


def test_channels_last_trains_like_the_plain_layout(datamodule):
    reference_rows, reference_weights, _ = _train(datamodule, channels_last=False)
    rows, weights, module = _train(datamodule, channels_last=True)
    assert module.autoencoder.encoder.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    _assert_same(rows, reference_rows, weights, reference_weights)


@pytest.mark.slow  # inductor compiles for minutes on 2 cores
def test_compiled_networks_train_like_eager_ones(datamodule):
    reference_rows, reference_weights, _ = _train(datamodule, channels_last=False)
    rows, weights, module = _train(datamodule, channels_last=False, compile=True)
    assert module.autoencoder.decoder._compiled_call_impl is not None
    assert list(module.state_dict()) == list(_train(datamodule, steps=1)[2].state_dict())  # names unchanged
    _assert_same(rows, reference_rows, weights, reference_weights)


class PlainDiscriminatorLoss(L.Callback):
    """Before each step, the discriminator loss the plain path computes: a separate forward of a copy of
    the autoencoder (same posterior noise) before the generator update."""

    def __init__(self) -> None:
        self.expected: list[float] = []
        self.logged: list[float] = []

    @torch.no_grad()
    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        images = batch["pixels"] if isinstance(batch, dict) else batch
        rng = torch.get_rng_state()
        autoencoder, discriminator = copy.deepcopy(module.autoencoder), copy.deepcopy(module.discriminator)
        posterior = autoencoder.encode(images).latent_dist
        reconstruction = autoencoder.decode(posterior.mean + posterior.std * torch.randn_like(posterior.mean)).sample
        real, fake = discriminator(torch.cat([images, reconstruction])).chunk(2)
        self.expected.append(float(discriminator_loss(real, fake, module.loss_config.gan_loss)))
        torch.set_rng_state(rng)

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.logged.append(float(trainer.callback_metrics["train/discriminator"]))


def test_one_shared_forward_gives_the_discriminator_the_plain_paths_loss(datamodule):
    """With `gan_updates: both` the discriminator steps on the generator forward's reconstructions
    (before the generator update), not on a second forward: same value as the plain path's."""
    module = tiny_module(loss={"disc_start_step": 0}, training={"gan_updates": "both"}, discriminator={"norm": "group"})
    plain = PlainDiscriminatorLoss()
    tiny_trainer(max_steps=3, callbacks=[plain]).fit(module, datamodule)
    assert plain.logged == pytest.approx(plain.expected, rel=1e-5)
    assert len(set(plain.logged)) == 3


def test_default_precision_follows_the_hardware(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True)
    assert default_precision("auto") == "bf16-mixed"
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    assert default_precision("auto") == "32-true"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)  # Ampere and later
    assert default_precision("gpu") == "bf16-mixed"
    assert default_precision("cpu") == "32-true"  # a CPU run on a GPU machine asks the CPU
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: including_emulation)  # pre-Ampere: emulated only
    assert default_precision("auto") == "32-true"  # fp32, never emulated bf16, never fp16 by itself
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: False)
    assert default_precision("auto") == "32-true"
