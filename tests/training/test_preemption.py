"""Pre-emption in process: the SIGTERM save must not cost the periodic step checkpoint of the same step (the
checkpoint callback runs after `Preemption`; a real signal is in tests/training/test_long_runs.py)."""

import lightning as L
import pytest

from tests.conftest import tiny_module, tiny_trainer
from vaetrain.training.callbacks import Preemption, RunCheckpoint


class SigtermAt(L.Callback):
    """Stands in for the signal handler: SIGTERM 'arrives' during the micro-batch that completes step `step`."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        if trainer.global_step == self.step:
            trainer._signal_connector.received_sigterm = True


@pytest.mark.parametrize("save_last", [True, "link"])
def test_sigterm_at_a_periodic_step_still_writes_that_step_checkpoint(tmp_path, datamodule, save_last):
    checkpoint = RunCheckpoint(
        dirpath=tmp_path, save_last=save_last, every_n_train_steps=2, filename="step={step:07d}", auto_insert_metric_name=False, keep_last_n=3
    )
    trainer = tiny_trainer(tmp_path, max_steps=10, callbacks=[SigtermAt(4), Preemption(), checkpoint], enable_checkpointing=True)
    with pytest.raises(SystemExit):
        trainer.fit(tiny_module(), datamodule)
    names = sorted(p.name for p in tmp_path.iterdir() if p.suffix == ".ckpt")
    # an uninterrupted run to step 4 keeps step=2 and step=4 (and last.ckpt)
    assert names == ["last.ckpt", "step=0000002.ckpt", "step=0000004.ckpt"], names
