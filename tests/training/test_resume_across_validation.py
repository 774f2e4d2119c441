"""Exact resume across validation wherever the checkpoint is written: at a batch end (validation in the middle of
an accumulation window), or at validation's end (a metric-monitored save deferred there, Lightning's default
trigger); and validation without training touches no random state of training's."""

from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from tests.conftest import tiny_module, tiny_trainer
from tests.training.test_module import _fresh_datamodule


def _run(root: Path, datamodule, max_steps: int, ckpt_path=None, *, val_check_interval=2, monitor=None, accumulate=2):
    L.seed_everything(0)
    module = tiny_module(loss={"disc_start_step": 2}, training={"accumulate_grad_batches": accumulate}, ema={"decay": 0.5})
    if monitor == "none-every-validation":  # Lightning's default trigger: a save at every validation's end
        checkpoint = ModelCheckpoint(dirpath=root, save_last=True)
    elif monitor is None:
        checkpoint = ModelCheckpoint(dirpath=root, save_last=True, every_n_train_steps=1)
    else:  # a metric-monitored top-k: Lightning defers the step save to validation's end
        checkpoint = ModelCheckpoint(dirpath=root, save_last=True, every_n_train_steps=1, monitor=monitor, mode="max")
    validation = dict(limit_val_batches=1, val_check_interval=val_check_interval, check_val_every_n_epoch=None, num_sanity_val_steps=1)
    trainer = tiny_trainer(root, max_steps=max_steps, callbacks=[checkpoint], enable_checkpointing=True, **validation)
    trainer.fit(module, datamodule, ckpt_path=ckpt_path, weights_only=True)
    return module, trainer


def _compare(tmp_path, image_folder, stop=3, **kwargs):
    straight, st = _run(tmp_path / "straight", _fresh_datamodule(image_folder), 6, **kwargs)
    _run(tmp_path / "resumed", _fresh_datamodule(image_folder), stop, **kwargs)
    resumed, rt = _run(tmp_path / "resumed", _fresh_datamodule(image_folder), 6, ckpt_path=str(tmp_path / "resumed" / "last.ckpt"), **kwargs)
    assert resumed.counters == straight.counters
    expected, actual = straight.state_dict(), resumed.state_dict()
    bad = [k for k in expected if not torch.equal(expected[k], actual[k])]
    assert not bad, bad[:5]


def test_resume_validation_mid_accumulation_window(tmp_path, image_folder):
    _compare(tmp_path, image_folder, val_check_interval=1)


def test_resume_from_checkpoint_written_at_validation_end(tmp_path, image_folder):
    """Step 1's save waits for val/psnr (not logged yet): Lightning writes it in on_validation_end, after
    validation drew random numbers, while training goes on with step 1's batch-end state."""
    _compare(tmp_path, image_folder, stop=1, val_check_interval=2, monitor="val/psnr")


def test_resume_from_default_checkpoint_trigger_at_validation_end(tmp_path, image_folder):
    """ModelCheckpoint without every_n_train_steps saves in on_validation_end (every_n_epochs=1)."""
    _compare(tmp_path, image_folder, stop=3, val_check_interval=2, monitor="none-every-validation")


def test_validate_without_training_runs(datamodule):
    """`vaetrain validate`: no train batch, nothing captured, nothing restored."""
    module = tiny_module()
    tiny_trainer(limit_val_batches=1).validate(module, datamodule)
    assert getattr(module, "_rng_after_batch", None) is None
