"""Activation checkpointing of AutoencoderKLWan (`models/families/wan_chunks.py`): the feature caches are
each chunk's explicit inputs and outputs, so a chunk recomputed in backward computes the same function.
Clips of 9 and 17 frames cross the decoder's "chunks after the second" threshold (two cached frames)."""

import pytest
import torch

from tests.conftest import TINY_WAN, tiny_module
from tests.training.test_memory_budget import model_probe
from vaetrain.errors import ConfigError
from vaetrain.models import AutoencoderConfig
from vaetrain.models.autoencoder import build_autoencoder
from vaetrain.models.families import decode, encode, family_of
from vaetrain.models.last_layers import LastLayerInput
from vaetrain.training.engines import PlainEngine


def _loss_and_gradients(model, clips, noise, recorder, weights):
    """An L1 + KL loss through encode, a posterior sample and decode; the gradient of every parameter, and
    the decoder's last-layer weight gradient as the adaptive weight reads it (`LastLayerInput`)."""
    posterior = encode(model, clips)
    latents = posterior.mean + torch.exp(0.5 * posterior.logvar) * noise
    reconstruction = decode(model, latents)
    last_layer = recorder.take_weight_gradient()(weights)
    loss = (reconstruction - clips).abs().mean() + (reconstruction * weights).mean() + 1e-3 * (posterior.mean**2 + posterior.logvar.exp()).mean()
    model.zero_grad(set_to_none=True)
    loss.backward()
    return loss.detach(), {name: p.grad.clone() for name, p in model.named_parameters()}, last_layer


def _close(actual: torch.Tensor, expected: torch.Tensor) -> bool:
    return torch.allclose(actual, expected, rtol=1e-5, atol=1e-5 * expected.abs().max().item() + 1e-12)


@pytest.mark.parametrize("frames", [9, 17])
def test_checkpointed_chunks_give_the_plain_paths_loss_and_gradients(frames):
    torch.manual_seed(0)
    model = build_autoencoder(AutoencoderConfig(**TINY_WAN)).train()
    recorder = LastLayerInput(model)
    clips = torch.rand(2, 3, frames, 16, 16) * 2 - 1
    noise = torch.randn(2, 4, 1 + (frames - 1) // 4, 4, 4)
    weights = torch.randn_like(clips)
    calls = []
    model.decoder.register_forward_pre_hook(lambda module, args: calls.append(args[0].shape[2]))

    plain = _loss_and_gradients(model, clips, noise, recorder, weights)
    plain_calls, calls[:] = len(calls), []
    family_of(model).set_gradient_checkpointing(model, True)
    assert model.is_gradient_checkpointing and family_of(model).is_gradient_checkpointing(model)
    checkpointed = _loss_and_gradients(model, clips, noise, recorder, weights)

    latent_frames = 1 + (frames - 1) // 4
    assert plain_calls == latent_frames and len(calls) > latent_frames  # the decoder's chunks ran again in backward
    assert _close(checkpointed[0], plain[0])
    assert plain[1].keys() == checkpointed[1].keys() and len(plain[1]) == len(list(model.parameters()))
    for name, gradient in plain[1].items():
        assert gradient.abs().sum() > 0, name
        assert _close(checkpointed[1][name], gradient), name
    assert _close(checkpointed[2], plain[2])  # the last layer's input recorded once per chunk, not again in backward
    assert not recorder.chunks  # taken; the recomputation in backward recorded nothing
    with torch.no_grad():  # without gradients: diffusers' own loop
        assert torch.equal(decode(model, noise[:1]), model.decode(noise[:1]).sample)


def test_the_switch_from_the_config_and_a_one_line_refusal_of_tiles():
    model = build_autoencoder(AutoencoderConfig(**TINY_WAN, gradient_checkpointing=True))
    assert family_of(model).gradient_checkpointing and family_of(model).is_gradient_checkpointing(model)
    model.enable_tiling(tile_sample_min_height=16, tile_sample_min_width=16, tile_sample_stride_height=8, tile_sample_stride_width=8)
    with pytest.raises(ConfigError, match="model.autoencoder.gradient_checkpointing") as error:
        encode(model, torch.zeros(1, 3, 5, 32, 32))
    assert "\n" not in str(error.value)
    family_of(model).set_gradient_checkpointing(model, False)
    assert not model.is_gradient_checkpointing


def _step(checkpointing: bool, frames: int):
    module = tiny_module(autoencoder=TINY_WAN, loss={"disc_start_step": 0, "perceptual_weight": 0.0}, discriminator={"kind": "patchgan3d"})
    module.set_gradient_checkpointing(checkpointing)
    networks = {"generator": module.autoencoder, "discriminator": module.discriminator}
    optimizers = {name: torch.optim.SGD(network.parameters(), lr=1e-2) for name, network in networks.items()}
    torch.manual_seed(1)
    clips = torch.rand(1, 3, frames, 16, 16) * 2 - 1
    logs = module.gan_step(clips, PlainEngine(module.gan_step, optimizers))
    return module, logs


def test_one_training_step_with_checkpointing_equals_one_without():
    """The one step (LDM's adaptive GAN weight through the last layer, a 3D PatchGAN, EMA) on a 9-frame clip."""
    plain, plain_logs = _step(False, 9)
    checkpointed, logs = _step(True, 9)
    assert checkpointed.plan.gradient_checkpointing and not plain.plan.gradient_checkpointing
    assert torch.isfinite(logs["train/adaptive_weight"]) and logs["train/adaptive_weight"] > 0
    assert logs.keys() == plain_logs.keys()
    for key, value in plain_logs.items():
        assert _close(torch.as_tensor(logs[key]).float(), torch.as_tensor(value).float()), key
    expected, before = plain.state_dict(), _step(False, 1)[0].state_dict()  # `before`: the same start, another clip
    for key, value in checkpointed.state_dict().items():
        if value.is_floating_point():
            assert _close(value, expected[key]), key
    assert any(not torch.equal(checkpointed.state_dict()[k], v) for k, v in before.items() if k.startswith("autoencoder."))


def test_the_memory_budget_can_choose_checkpointing_for_wan(tmp_path, video_folder):
    from tests.conftest import tiny_trainer
    from tests.training.test_video import _data
    from vaetrain.training.memory_budget import MemoryBudget

    module = tiny_module(autoencoder=TINY_WAN, loss={"disc_start_step": 5}, discriminator={"kind": "patchgan3d"})
    budget = MemoryBudget(max_memory="8GB")
    budget.probe = model_probe(static_gib=5, gib_per_image=2, seconds_per_image=0.01)  # plain: nothing fits; checkpointed: 2
    tiny_trainer(tmp_path, max_steps=1, callbacks=[budget]).fit(module, _data(video_folder))
    assert budget.plan.gradient_checkpointing and module.plan.gradient_checkpointing
    assert family_of(module.autoencoder).is_gradient_checkpointing(module.autoencoder)
    assert module.counters.generator_steps == 1
