"""End-to-end tuning (REPA-E, `training.features.end_to_end`): gradient routing, the reference's formulas,
three optimizers that step, accumulate and resume exactly, the update guard over every buffer, the export."""

from __future__ import annotations

import json

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from tests.conftest import tiny_module, tiny_trainer
from vaetrain.losses.end_to_end import EndToEndConfig, projection_loss
from vaetrain.training.engines import PlainEngine
from vaetrain.training.networks import optimizer_names, trainable_parameters

TINY_SIT = dict(enabled=True, encoder="random-small", size=(2, 2, 16), patch_size=1, encoder_depth=1, projector_dim=32)


def e2e_module(representation_encoder=None, **overrides):
    loss = {"end_to_end": EndToEndConfig(**TINY_SIT), "disc_start_step": 0} | overrides.pop("loss", {})
    return tiny_module(loss=loss, representation_encoder=representation_encoder, **overrides)


def tiny_dinov2():
    """A transformers DINOv2 built from a tiny config (random weights, no download) behind vaetrain's loader."""
    from transformers import Dinov2Config, Dinov2Model

    from vaetrain.models.feature_encoders import DinoV2Features

    torch.manual_seed(0)
    config = Dinov2Config(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, patch_size=14, image_size=224)
    return DinoV2Features(Dinov2Model(config))


def _grads(parameters) -> list[torch.Tensor | None]:
    return [None if p.grad is None else p.grad.clone() for p in parameters]


def _unit(module):
    return next(f for f in module.features if f.name == "end_to_end")


def test_projection_loss_is_the_references_by_hand():
    """REPA-E models/sit.py `SiT.forward`: proj_loss = sum over images of mean over tokens of -<z/|z|, z~/|z~|>, / batch."""
    generator = torch.Generator().manual_seed(0)
    projected, features = torch.randn(3, 4, 5, generator=generator), torch.randn(3, 5, 2, 2, generator=generator)
    tokens = features.flatten(2).transpose(1, 2)
    by_hand = 0.0
    for z, z_tilde in zip(tokens, projected):
        by_hand += float((-(z / z.norm(dim=-1, keepdim=True)) * (z_tilde / z_tilde.norm(dim=-1, keepdim=True))).sum(-1).mean())
    assert float(projection_loss(projected, features)) == pytest.approx(by_hand / 3, rel=1e-6)


def test_the_diffusion_loss_leaves_the_vaes_gradients_unchanged_and_alignment_reaches_both():
    """The SiT's loss reads the latent detached (REPA-E: `x=z.detach()`): its backward adds nothing to the
    VAE's gradients; the VAE's own backward carries the alignment (1.5 x the projection loss) into the VAE
    and leaves the SiT without gradients (its parameters are off, as the reference's `requires_grad(model, False)`);
    the SiT's backward carries its alignment into the projector and the blocks up to the aligned one."""
    module = e2e_module(representation_encoder=tiny_dinov2())
    step, unit = module.gan_step, _unit(module)
    engine = PlainEngine(step)
    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1)) * 2 - 1
    vae = [p for _, p in trainable_parameters(module, "generator")]
    sit = [p for _, p in trainable_parameters(module, "diffusion")]
    with engine.accumulating("generator", sync=True):
        step.generator_backward(images, 0.0, engine)
    after_vae = _grads(vae)
    assert all(p.grad is None for p in sit)
    with engine.accumulating("diffusion", sync=True):
        loss, _ = unit.network_loss("diffusion")
        loss.backward()
    assert all((a is None and p.grad is None) or torch.equal(a, p.grad) for a, p in zip(after_vae, vae))
    assert module.diffusion.projector[0].weight.grad.abs().sum() > 0
    assert module.diffusion.transformer.transformer_blocks[0].attn1.to_q.weight.grad.abs().sum() > 0

    # the alignment alone, into the VAE: its gradient reaches the encoder (with weight 0 it does not)
    def encoder_gradient(weight: float) -> torch.Tensor:
        m = e2e_module(loss={"end_to_end": EndToEndConfig(**TINY_SIT | {"vae_alignment_weight": weight}), "perceptual_weight": 0.0, "kl_weight": 0.0})
        m.zero_grad(set_to_none=True)
        e = PlainEngine(m.gan_step)
        with e.accumulating("generator", sync=True):
            m.gan_step.generator_backward(images, 0.0, e)
        return m.autoencoder.encoder.conv_in.weight.grad.clone()

    assert not torch.allclose(encoder_gradient(1.5), encoder_gradient(0.0))


def _one_update(accumulate: int) -> dict[str, torch.Tensor]:
    """Every network's state after one accumulated batch of 4 images in `accumulate` micro-batches, with the
    same t and noise per image (drawn per image, not per micro-batch) and a per-sample discriminator."""
    module = e2e_module(loss={"sample_posterior": False, "balance": "fixed"}, training={"accumulate_grad_batches": accumulate})
    unit, step = _unit(module), module.gan_step
    generator = torch.Generator().manual_seed(3)
    images = torch.rand(4, 3, 32, 32, generator=generator) * 2 - 1
    times, noise = torch.rand(4, generator=generator), torch.randn(4, 4, 16, 16, generator=generator)
    seen = []

    def draw(latents):
        start = sum(seen)
        seen.append(len(latents))
        return times[start : start + len(latents)], noise[start : start + len(latents)]

    unit.draw = draw
    optimizers = {name: torch.optim.Adam([p for _, p in trainable_parameters(module, name)], lr=1e-3) for name in optimizer_names(module)}
    engine = PlainEngine(step, optimizers)
    for chunk in images.chunk(accumulate):
        step(chunk, engine)
    assert step.counters.generator_steps == 1 and len(optimizers) == 3
    return {k: v.clone() for k, v in module.state_dict().items() if k.split(".")[0] in ("autoencoder", "discriminator", "ema", "diffusion", "diffusion_ema")}


def test_accumulation_1x4_equals_2x2_for_every_network():
    """One micro-batch of 4 or two of 2: the same autoencoder, discriminator, SiT, BatchNorm statistics and EMAs."""
    one, two = _one_update(1), _one_update(2)
    assert one.keys() == two.keys() and any(k.startswith("diffusion.batch_norm.running_var") for k in one)
    for key in one:
        torch.testing.assert_close(one[key].float(), two[key].float(), atol=2e-5, rtol=1e-4, msg=key)


def _fit(root, datamodule, max_steps: int, *, ckpt_path=None, callbacks=()):
    module = e2e_module()
    checkpoint = ModelCheckpoint(dirpath=root, save_last=True, every_n_train_steps=1)
    trainer = tiny_trainer(root, max_steps=max_steps, callbacks=[checkpoint, *callbacks], enable_checkpointing=True)
    trainer.fit(module, datamodule, ckpt_path=ckpt_path, weights_only=True)
    return module, trainer


def test_three_optimizers_step_and_resume_bit_exactly(tmp_path, datamodule, image_folder):
    from vaetrain.data import SampleDataModule

    def data():
        return SampleDataModule(path=str(image_folder), resolution=32, batch_size=2, val_size=2, num_workers=0, seed=0)

    straight, straight_trainer = _fit(tmp_path / "straight", data(), 2)
    _fit(tmp_path / "resumed", data(), 1)
    resumed, resumed_trainer = _fit(tmp_path / "resumed", data(), 2, ckpt_path=str(tmp_path / "resumed" / "last.ckpt"))
    assert len(straight_trainer.optimizers) == 3 and straight_trainer.global_step == resumed_trainer.global_step == 2
    expected, actual = straight.state_dict(), resumed.state_dict()
    assert expected.keys() == actual.keys() and "diffusion_ema.n_averaged" in expected
    assert int(expected["diffusion.batch_norm.num_batches_tracked"]) == 2 and int(expected["diffusion_ema.n_averaged"]) == 2
    for key in expected:
        assert torch.equal(expected[key], actual[key]), key
    for a_opt, b_opt in zip(straight_trainer.optimizers, resumed_trainer.optimizers):
        assert len(a_opt.state) > 0
        for a, b in zip(a_opt.state.values(), b_opt.state.values()):
            assert all(torch.equal(a[k], b[k]) for k in a)


class PoisonBatch(L.Callback):
    """Batch `index` becomes NaN; the state after each batch is kept (every tensor of the module, every optimizer moment)."""

    def __init__(self, index: int) -> None:
        self.index, self.states = index, []

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        if batch_idx == self.index:
            batch.fill_(float("nan"))

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        moments = [v.clone() for o in trainer.optimizers for s in o.state.values() for v in s.values() if torch.is_tensor(v)]
        self.states.append(({k: v.clone() for k, v in module.state_dict().items()}, moments))


def test_a_nan_batch_reaches_no_network_or_buffer(datamodule):
    """Weights of all three networks, the BatchNorm's statistics, both EMAs and every optimizer moment are
    what they were before the NaN batch; the next batch trains again. (Spectral norm's power-iteration vectors
    advance once per window from the weights alone, whatever the batch: they stay finite.)"""
    poison = PoisonBatch(index=1)
    module = e2e_module(training={"max_consecutive_skips": 5})
    tiny_trainer(max_steps=3, callbacks=[poison]).fit(module, datamodule)
    (before, moments_before), (after, moments_after), (later, _) = poison.states
    assert module.counters.skipped_updates == 1
    assert any(k.startswith("diffusion.batch_norm.running_mean") for k in before)
    for key in before:
        if key.endswith(("weight.0._u", "weight.0._v")):
            assert torch.isfinite(after[key]).all(), key
        else:
            assert torch.equal(before[key], after[key]), key
    assert all(torch.equal(a, b) for a, b in zip(moments_before, moments_after))
    assert not torch.equal(before["diffusion.batch_norm.running_mean"], later["diffusion.batch_norm.running_mean"])
    assert all(torch.isfinite(v).all() for v in later.values() if v.is_floating_point())


@pytest.mark.parametrize("convention", ["per_channel", pytest.param("scale_shift", marks=pytest.mark.slow)])
def test_the_export_reloads_in_diffusers_with_identical_outputs(tmp_path, datamodule, convention):
    """The tuned AutoencoderKL with the normalisation the EMA SiT's BatchNorm learned, in the convention asked
    for; the SiT beside it as a DiTTransformer2DModel folder; the card says how it was tuned."""
    from diffusers import AutoencoderKL, DiTTransformer2DModel

    from vaetrain.export import ExportDiffusers

    export = ExportDiffusers(latent_statistics_images=8, latents=convention)
    module = e2e_module()
    tiny_trainer(tmp_path, max_steps=2, callbacks=[export]).fit(module, datamodule)
    vae = AutoencoderKL.from_pretrained(export.path).eval()
    images = torch.rand(2, 3, 32, 32) * 2 - 1
    tuned = module.inference_autoencoder().eval()
    with torch.no_grad():
        assert torch.equal(tuned.encode(images).latent_dist.mean, vae.encode(images).latent_dist.mean)
        latents = torch.randn(2, 4, 16, 16)
        assert torch.equal(tuned.decode(latents).sample, vae.decode(latents).sample)
    mean = module.diffusion_ema.module.batch_norm.running_mean
    std = module.diffusion_ema.module.batch_norm.running_var.sqrt()
    if convention == "per_channel":
        torch.testing.assert_close(torch.tensor(vae.config.latents_mean), mean, rtol=1e-6, atol=1e-7)
        torch.testing.assert_close(torch.tensor(vae.config.latents_std), std, rtol=1e-6, atol=1e-7)
    else:
        assert vae.config.shift_factor == pytest.approx(float(mean.double().mean()), rel=1e-6)
        pooled = (std.double().square() + (mean.double() - mean.double().mean()).square()).mean().sqrt()
        assert vae.config.scaling_factor == pytest.approx(float(1 / pooled), rel=1e-6)
    side = export.path.parent / f"{export.path.name}-sit"
    sit = DiTTransformer2DModel.from_pretrained(side).eval()
    noisy, t, labels = torch.randn(2, 4, 16, 16), torch.tensor([100.0, 700.0]), torch.zeros(2, dtype=torch.long)
    trained = module.diffusion_ema.module.transformer.eval()  # in train mode diffusers' label embedding drops labels
    with torch.no_grad():
        assert torch.equal(sit(noisy, timestep=t, class_labels=labels).sample, trained(noisy, timestep=t, class_labels=labels).sample)
    assert json.loads((side / "end_to_end.json").read_text())["latents_mean"] == pytest.approx(mean.tolist())
    assert "end-to-end tuned (REPA-E)" in (export.path / "README.md").read_text()
