from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from tests.conftest import tiny_module, tiny_trainer
from vaetrain.data import SampleDataModule


class RecordSteps(L.Callback):
    """After every micro-batch: the step counters and whether each network's weights changed."""

    def __init__(self) -> None:
        self.rows: list[tuple[int, int, bool, bool]] = []
        self._before = None

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        self._before = (_flat(module.autoencoder), _flat(module.discriminator))

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        g, d = self._before
        self.rows.append(
            (
                module.counters.generator_steps,
                module.counters.discriminator_steps,
                not torch.equal(g, _flat(module.autoencoder)),
                not torch.equal(d, _flat(module.discriminator)),
            )
        )


def _flat(module: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten().clone() for p in module.parameters()])


def test_alternating_updates_with_accumulation(datamodule):
    module = tiny_module(loss={"disc_start_step": 1}, training={"accumulate_grad_batches": 2, "gan_updates": "alternate"})
    recorder = RecordSteps()
    trainer = tiny_trainer(max_steps=3, callbacks=[recorder])
    trainer.fit(module, datamodule)
    # (generator steps, discriminator steps, autoencoder changed, discriminator changed) per micro-batch:
    # warm-up window (G), then D, G, D, G windows of 2 micro-batches; weights change only on a window's last.
    assert recorder.rows == [
        (0, 0, False, False),
        (1, 0, True, False),
        (1, 0, False, False),
        (1, 1, False, True),
        (1, 1, False, False),
        (2, 1, True, False),
        (2, 1, False, False),
        (2, 2, False, True),
        (2, 2, False, False),
        (3, 2, True, False),
    ]
    assert trainer.global_step == 3  # generator steps, not generator + discriminator
    assert module.counters.samples_seen == 10 * datamodule.batch_size


def test_both_networks_step_on_each_accumulated_batch_after_warmup(datamodule):
    module = tiny_module(loss={"disc_start_step": 2}, training={"accumulate_grad_batches": 3, "gan_updates": "both"})
    recorder = RecordSteps()
    trainer = tiny_trainer(max_steps=4, callbacks=[recorder])
    trainer.fit(module, datamodule)
    closes = [row for i, row in enumerate(recorder.rows) if i % 3 == 2]
    others = [row for i, row in enumerate(recorder.rows) if i % 3 != 2]
    assert [(g, d) for g, d, _, _ in closes] == [(1, 0), (2, 0), (3, 1), (4, 2)]
    assert [(ga, da) for _, _, ga, da in closes] == [(True, False), (True, False), (True, True), (True, True)]
    assert not any(ga or da for _, _, ga, da in others)
    assert trainer.global_step == 4


def test_decoder_only_finetune_keeps_encoder_fixed(datamodule):
    module = tiny_module(autoencoder={"train_encoder": False})
    encoder_before = _flat(module.autoencoder.encoder)
    decoder_before = _flat(module.autoencoder.decoder)
    tiny_trainer(max_steps=2).fit(module, datamodule)
    assert torch.equal(encoder_before, _flat(module.autoencoder.encoder))
    assert not torch.equal(decoder_before, _flat(module.autoencoder.decoder))


def _run(root: Path, datamodule: SampleDataModule, max_steps: int, ckpt_path: str | None = None, validate: bool = False):
    L.seed_everything(0)
    module = tiny_module(loss={"disc_start_step": 2}, training={"accumulate_grad_batches": 2}, ema={"decay": 0.5})
    checkpoint = ModelCheckpoint(dirpath=root, save_last=True, every_n_train_steps=1)
    validation = dict(limit_val_batches=1, val_check_interval=2, check_val_every_n_epoch=None, num_sanity_val_steps=1) if validate else {}
    trainer = tiny_trainer(root, max_steps=max_steps, callbacks=[checkpoint], enable_checkpointing=True, **validation)
    trainer.fit(module, datamodule, ckpt_path=ckpt_path, weights_only=True)
    return module, trainer


def _fresh_datamodule(folder: Path) -> SampleDataModule:
    return SampleDataModule(path=str(folder), resolution=32, batch_size=2, val_size=2, num_workers=0, seed=0)


@pytest.mark.parametrize("validate", [False, True], ids=["plain", "validating"])
def test_stopped_and_resumed_run_ends_with_the_same_state(tmp_path, image_folder, validate):
    """With validation every 2 micro-batches (and a sanity check), the resumed run skips the validation the
    straight run ran right after the step it resumes from: validation must leave training's random state alone."""
    straight, straight_trainer = _run(tmp_path / "straight", _fresh_datamodule(image_folder), max_steps=6, validate=validate)
    _run(tmp_path / "resumed", _fresh_datamodule(image_folder), max_steps=3, validate=validate)
    last = str(tmp_path / "resumed" / "last.ckpt")
    resumed, resumed_trainer = _run(tmp_path / "resumed", _fresh_datamodule(image_folder), max_steps=6, ckpt_path=last, validate=validate)
    assert resumed.counters == straight.counters
    assert resumed_trainer.global_step == straight_trainer.global_step == 6
    expected, actual = straight.state_dict(), resumed.state_dict()
    assert expected.keys() == actual.keys()
    assert any(k.startswith("ema.module.") for k in expected)  # the EMA is compared too
    for key in expected:
        assert torch.equal(expected[key], actual[key]), key
    for expected_opt, actual_opt in zip(straight_trainer.optimizers, resumed_trainer.optimizers):
        for a, b in zip(expected_opt.state.values(), actual_opt.state.values()):
            assert all(torch.equal(a[k], b[k]) for k in a)


def test_checkpoint_is_weights_only_and_lean(tmp_path, image_folder):
    _run(tmp_path, _fresh_datamodule(image_folder), max_steps=2)
    checkpoint = torch.load(tmp_path / "last.ckpt", weights_only=True)
    assert not any(k.startswith("perceptual.") for k in checkpoint["state_dict"])
    assert checkpoint["vaetrain"]["counters"]["generator_steps"] == 2
    assert len(checkpoint["optimizer_states"]) == 2 and len(checkpoint["lr_schedulers"]) == 2


def test_unknown_checkpoint_is_rejected(tmp_path, datamodule):
    path = tmp_path / "foreign.ckpt"
    torch.save({"state_dict": {}, "epoch": 0, "global_step": 0, "pytorch-lightning_version": "2.6.6"}, path)
    module = tiny_module()
    with pytest.raises(Exception, match="not a vaetrain checkpoint"):
        tiny_trainer().fit(module, datamodule, ckpt_path=str(path))


class AssertLpipsEval(L.Callback):
    def __init__(self) -> None:
        self.checked = 0

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        assert module.training and not any(m.training for m in module.perceptual.network.modules())
        self.checked += 1


def test_lpips_stays_in_eval_mode_during_fit(datamodule):
    checker = AssertLpipsEval()
    tiny_trainer(max_steps=2, callbacks=[checker]).fit(tiny_module(), datamodule)
    assert checker.checked == 2


def test_lpips_is_in_no_optimizer_and_stays_frozen_through_training(datamodule):
    """Lightning's toggle_model re-enables `requires_grad` for the parameters of the optimizer that steps:
    LPIPS must belong to none, or it would start training (and the trap's test above would not see it)."""
    module = tiny_module(loss={"disc_start_step": 0})
    trainer = tiny_trainer(max_steps=2)
    trainer.fit(module, datamodule)
    optimized = {id(p) for optimizer in trainer.optimizers for group in optimizer.param_groups for p in group["params"]}
    lpips = list(module.perceptual.parameters())
    assert lpips and not any(id(p) in optimized for p in lpips)
    assert not any(p.requires_grad or p.grad is not None for p in lpips)


class RecordSpectralVectors(L.Callback):
    def __init__(self) -> None:
        self.vectors: list[torch.Tensor] = []

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.vectors.append(torch.cat([b.detach().flatten().clone() for n, b in module.discriminator.named_buffers() if n.endswith("_u")]))


def test_spectral_norm_advances_once_per_accumulated_batch(datamodule):
    """Its power iteration runs in training forwards; per micro-batch it would depend on how a step's
    batch is split into micro-batches and processes."""
    module = tiny_module(loss={"disc_start_step": 1}, training={"accumulate_grad_batches": 3, "gan_updates": "both"})
    recorder = RecordSpectralVectors()
    tiny_trainer(max_steps=3, callbacks=[recorder]).fit(module, datamodule)
    changed = [not torch.equal(before, after) for before, after in zip(recorder.vectors, recorder.vectors[1:])]
    # micro-batches 1..8 relative to the previous one: the first of windows 2 and 3 (micro-batches 3, 6) change u
    assert changed == [False, False, True, False, False, True, False, False]


@pytest.mark.slow  # 11 s of Inception on CPU; validation's other metrics are tested in the default suite
def test_rfid_is_measured_on_every_nth_validation(datamodule):
    from vaetrain.evaluation.metric_networks import build_inception

    module = tiny_module(validation={"rfid_every_n": 2}, inception=build_inception("random"))
    logged = []
    original = module.log_dict
    module.log_dict = lambda values, **kwargs: (logged.append(dict(values)), original(values, **kwargs))[1]
    tiny_trainer(max_steps=4, limit_val_batches=2, val_check_interval=1, check_val_every_n_epoch=None).fit(module, datamodule)
    validations = [row for row in logged if "val/psnr" in row]
    assert len(validations) == 4
    assert ["val/rfid" in row for row in validations] == [True, False, True, False]
    assert not any(k.startswith("val_metrics.") for k in module.state_dict())  # Inception is not checkpointed
