"""The one GAN step: gradient routing, skipped non-finite updates, clipping, the EMA formula, and the
memory probe running exactly the training step."""

import math

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from tests.conftest import tiny_module, tiny_trainer
from vaetrain.checkpoints.schema import load_checkpoint
from vaetrain.errors import ConfigError, TrainingDiverged
from vaetrain.training.engines import PlainEngine
from vaetrain.training.memory_budget import probe_step
from vaetrain.training.optim import OptimizerConfig


def _flat(module: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten().clone() for p in module.parameters()])


def test_discriminator_loss_does_not_reach_autoencoder():
    """The reconstruction handed to the discriminator update carries the autoencoder's graph; the step
    detaches it, so only the discriminator gets gradients."""
    module = tiny_module(loss={"disc_start_step": 0})
    step = module.gan_step
    images = torch.rand(2, 3, 32, 32) * 2 - 1
    reconstruction = step.reconstruct(images).images
    assert reconstruction.grad_fn is not None
    module.zero_grad(set_to_none=True)
    step.discriminator_backward(images, reconstruction, PlainEngine(step))
    assert all(p.grad is None for p in module.autoencoder.parameters())
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in module.discriminator.parameters())


class PoisonDiscriminator(L.Callback):
    """From micro-batch `start` on (counted from 0), the discriminator's logits are NaN (so are both
    networks' gradients)."""

    def __init__(self, start: int) -> None:
        self.start = start

    def on_fit_start(self, trainer, module):
        module.discriminator.register_forward_hook(lambda m, i, out: out * float("nan") if module.counters.micro_batches >= self.start else out)


class Snapshots(L.Callback):
    """After each batch: both networks' weights and every Adam moment and step count, flattened."""

    def __init__(self) -> None:
        self.rows: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        moments = [v.detach().flatten().float().clone() for o in trainer.optimizers for s in o.state.values() for v in s.values() if torch.is_tensor(v)]
        self.rows.append((_flat(module.autoencoder), _flat(module.discriminator), torch.cat(moments)))


def test_nonfinite_update_is_skipped_and_counted(datamodule):
    """Weights and optimizer moments stay as they were; the step still counts (global_step, schedules)."""
    module = tiny_module(loss={"disc_start_step": 0}, training={"max_consecutive_skips": 5})
    snapshots = Snapshots()
    tiny_trainer(max_steps=4, callbacks=[PoisonDiscriminator(start=2), snapshots]).fit(module, datamodule)
    (g1, d1, _), (g2, d2, states2), (g3, d3, states3), (g4, d4, states4) = snapshots.rows
    assert not torch.equal(g1, g2) and not torch.equal(d1, d2)  # steps 1-2 trained
    assert torch.equal(g2, g3) and torch.equal(g3, g4) and torch.equal(d2, d3) and torch.equal(d3, d4)
    assert torch.equal(states2, states3) and torch.equal(states3, states4)  # Adam's moments and step counts untouched
    assert all(torch.isfinite(p).all() for p in module.parameters())
    assert (module.counters.generator_steps, module.counters.skipped_updates, module.counters.consecutive_skips) == (4, 2, 2)


def test_consecutive_skips_stop_the_run_and_keep_the_last_good_checkpoint(datamodule, tmp_path):
    module = tiny_module(loss={"disc_start_step": 0}, training={"max_consecutive_skips": 3})
    checkpoint = ModelCheckpoint(dirpath=tmp_path, save_last=True, every_n_train_steps=1)
    trainer = tiny_trainer(tmp_path, max_steps=20, callbacks=[PoisonDiscriminator(start=2), checkpoint], enable_checkpointing=True)
    with pytest.raises(TrainingDiverged, match="3 updates in a row had non-finite gradients"):
        trainer.fit(module, datamodule)
    saved, record = load_checkpoint(tmp_path / "last.ckpt")
    assert all(torch.isfinite(v).all() for v in saved["state_dict"].values() if v.is_floating_point())
    assert record.counters.generator_steps <= 4  # nothing after the streak


class OptimizerStepSpy(L.Callback):
    """The gradient norm each raw optimizer updates with: measured after Lightning's closure, which runs the
    `on_before_optimizer_step` hooks (where the module clips) inside `optimizer.step`."""

    def __init__(self) -> None:
        self.norms: dict[int, list[float]] = {0: [], 1: []}

    def on_train_start(self, trainer, module):
        for index, optimizer in enumerate(trainer.optimizers):
            optimizer.step = self._recording(optimizer, optimizer.step, self.norms[index])

    @staticmethod
    def _recording(optimizer, original, norms):
        def step(closure=None, **kwargs):
            def closure_then_record():
                result = closure() if closure is not None else None
                grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
                norms.append(float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads]))))
                return result

            return original(closure=closure_then_record, **kwargs)

        return step


def test_gradient_clipping_is_per_optimizer(datamodule):
    clip = 1e-3
    module = tiny_module(
        loss={"disc_start_step": 0}, optimizer=OptimizerConfig(lr=1e-3, gradient_clip_norm=clip), discriminator_optimizer=OptimizerConfig(lr=1e-3)
    )
    spy = OptimizerStepSpy()
    tiny_trainer(max_steps=3, callbacks=[spy]).fit(module, datamodule)
    assert spy.norms[0] == pytest.approx([clip] * 3, rel=1e-4)  # the generator's were larger and are clipped
    assert float(module.gan_step.guard.norms["generator"]) > clip  # (the norm before clipping, as logged)
    assert len(spy.norms[1]) == 3 and min(spy.norms[1]) > 10 * clip  # the discriminator's are not


class AutoencoderWeights(L.Callback):
    def __init__(self) -> None:
        self.after_step: list[dict[str, torch.Tensor]] = []

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.after_step.append({k: v.detach().clone() for k, v in module.autoencoder.state_dict().items()})


@pytest.mark.parametrize("every_n_steps", [1, 2])
def test_ema_follows_the_decay_formula_over_several_steps(datamodule, every_n_steps):
    """torch's AveragedModel with `get_ema_multi_avg_fn`: the first update copies the weights, then
    ema <- decay * ema + (1 - decay) * weights, on generator steps start_step, start_step + every_n_steps, ..."""
    decay = 0.7
    module = tiny_module(ema={"decay": decay, "start_step": 1, "every_n_steps": every_n_steps}, loss={"disc_start_step": 2})
    recorder = AutoencoderWeights()
    tiny_trainer(max_steps=5, callbacks=[recorder]).fit(module, datamodule)
    expected = None
    for step, weights in enumerate(recorder.after_step, start=1):
        if step >= 1 and (step - 1) % every_n_steps == 0:
            expected = dict(weights) if expected is None else {k: decay * expected[k] + (1 - decay) * weights[k] for k in weights}
    updates = len([s for s in range(1, 6) if (s - 1) % every_n_steps == 0])
    assert int(module.ema.n_averaged) == updates
    for key, value in module.ema.module.state_dict().items():
        torch.testing.assert_close(value, expected[key], rtol=1e-5, atol=1e-7, msg=key)


class FirstBatch(L.Callback):
    """Seeds the RNG before the first training step and records its batch, logged losses and the weights."""

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        if batch_idx == 0:
            self.images = batch.clone()  # the tensor the data module hands the module
            torch.manual_seed(123)

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        if batch_idx == 0:
            self.losses = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("train/")}
            self.state = {k: v.clone() for k, v in module.state_dict().items()}


class ProbeFirst(L.Callback):
    """Where the memory budget probes (after configure_model and the strategy's set-up): one probe step."""

    def __init__(self, images: torch.Tensor) -> None:
        self.images = images

    def on_fit_start(self, trainer, module):
        torch.manual_seed(123)
        self.losses = {k: float(v) for k, v in probe_step(module, self.images).items()}
        self.state = {k: v.clone() for k, v in module.state_dict().items()}


def test_the_memory_probe_runs_exactly_the_training_step(datamodule):
    """Same batch, same seed, same precision: the probe's step and Lightning's training step give
    identical losses and identical weights (clipping, autocast, EMA and both optimizers included)."""
    settings = dict(loss={"disc_start_step": 0}, optimizer=OptimizerConfig(lr=1e-3, gradient_clip_norm=1e-5))
    trained = FirstBatch()
    tiny_trainer(max_steps=1, precision="bf16-mixed", callbacks=[trained]).fit(tiny_module(**settings), datamodule)
    probed = ProbeFirst(trained.images)
    tiny_trainer(max_steps=1, precision="bf16-mixed", callbacks=[probed]).fit(tiny_module(**settings), datamodule)
    assert {"train/total", "train/adversarial", "train/discriminator", "train/kl", "train/perceptual"} <= set(probed.losses)
    for name, value in probed.losses.items():
        if name in trained.losses:
            assert value == trained.losses[name], name
    assert trained.state.keys() == probed.state.keys()
    for key, value in trained.state.items():
        assert torch.equal(value, probed.state[key]), key


def _alignment_weight_after_one_update(accumulate: int, scaler: torch.amp.GradScaler | None = None) -> float:
    """VA-VAE's adaptive weight measured on one accumulated batch of 4 images, split into `accumulate`
    micro-batches, through a loss scaler or none (no GAN term: the image terms are per-image sums)."""
    from vaetrain.losses.alignment import AlignmentConfig

    module = tiny_module(loss={"alignment": AlignmentConfig(weight=0.1, encoder="random-small"), "disc_start_step": 10**6, "sample_posterior": False})
    step = module.gan_step
    step.accumulate = accumulate
    trained = [p for p in module.autoencoder.parameters()] + list(module.alignment_projection.parameters())
    engine = PlainEngine(step, {"generator": torch.optim.SGD(trained, lr=0.0)}, scaler)
    images = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(1)) * 2 - 1
    for chunk in images.chunk(accumulate):
        step(chunk, engine)
    assert step.counters.generator_steps == 1
    return float(module.alignment_projection.ratio)


def test_alignment_weight_does_not_depend_on_accumulation_or_the_loss_scale():
    """hustvl/LightningDiT `calculate_adaptive_weight_vf` on the global batch's unscaled losses: the same with
    1 x 4 images, 2 x 2 images, and under a GradScaler at 2^16 (the backward sees loss x 2^16 / k)."""
    one = _alignment_weight_after_one_update(1)
    assert one > 0
    assert _alignment_weight_after_one_update(2) == pytest.approx(one, rel=1e-5)
    assert _alignment_weight_after_one_update(1, torch.amp.GradScaler("cpu", init_scale=2.0**16)) == pytest.approx(one, rel=1e-5)
    assert _alignment_weight_after_one_update(2, torch.amp.GradScaler("cpu", init_scale=2.0**16)) == pytest.approx(one, rel=1e-5)


class PoisonOneMicroBatch(L.Callback):
    """Micro-batch `index` (counted from 0) gets NaN discriminator logits; the others are untouched."""

    def __init__(self, index: int) -> None:
        self.index = index

    def on_fit_start(self, trainer, module):
        module.discriminator.register_forward_hook(lambda m, i, out: out * float("nan") if module.counters.micro_batches == self.index else out)


class Anchors(L.Callback):
    def __init__(self) -> None:
        self.rows: list[tuple[float, float]] = []

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.rows.append((float(module.lecam_anchors.real), float(module.lecam_anchors.fake)))


def test_a_nan_batch_does_not_reach_the_lecam_anchors(datamodule):
    """LeCam's anchors move after a finite discriminator update only, once per optimizer step: a NaN batch
    in the middle of an accumulated batch is skipped with its window, and the run goes on with finite anchors."""
    module = tiny_module(loss={"disc_start_step": 0, "lecam_weight": 0.1}, training={"accumulate_grad_batches": 2})
    anchors = Anchors()
    tiny_trainer(max_steps=4, callbacks=[PoisonOneMicroBatch(index=3), anchors]).fit(module, datamodule)
    assert (module.counters.generator_steps, module.counters.skipped_updates) == (4, 1)
    assert all(math.isfinite(value) for row in anchors.rows for value in row)
    moved = [i for i in range(1, len(anchors.rows)) if anchors.rows[i] != anchors.rows[i - 1]]
    assert moved == [1, 5, 7]  # micro-batches 1, 3, 5 and 7 close windows; the window of 3 was skipped
    assert anchors.rows[0] == (0.0, 0.0) and anchors.rows[1] != (0.0, 0.0)


def test_a_latent_conditioned_discriminator_reads_the_decoded_latents(datamodule):
    """TAESD's conditional GAN: the discriminator sees the image and the latent the decoder decoded (its
    first layer has image + latent channels), in both halves of the step, and the run trains."""
    module = tiny_module(loss={"disc_start_step": 0}, discriminator={"condition_on_latents": True})
    assert module.discriminator.layers[0].in_channels == 3 + 4
    seen = []
    module.discriminator.register_forward_pre_hook(lambda m, args, kwargs: seen.append(kwargs["condition"].shape), with_kwargs=True)
    images = torch.rand(2, 3, 32, 32) * 2 - 1
    result = module.gan_step.reconstruct(images)
    real, _ = module.discriminator(images, condition=result.mean.detach()), None
    other = module.discriminator(images, condition=torch.zeros_like(result.mean))
    assert not torch.equal(real, other)  # the logits depend on the condition
    tiny_trainer(max_steps=2).fit(module, datamodule)
    assert (4, 4, 16, 16) in seen and (2, 4, 16, 16) in seen  # discriminator half (real + fake), generator half
    assert all(torch.isfinite(p).all() for p in module.parameters())
    with pytest.raises(ConfigError, match="condition_on_latents does not apply with model.loss.equivariance"):
        from vaetrain.losses.equivariance import EquivarianceConfig

        tiny_module(discriminator={"condition_on_latents": True}, loss={"equivariance": EquivarianceConfig(probability=0.5)})
