"""Diagnostics: each warning fires on a constructed history and stays silent on a healthy one; the
discriminator warm-up ramp, step by step; checkpoints that keep the newest n."""

import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from tests.conftest import tiny_module, tiny_trainer
from vaetrain.errors import ConfigError
from vaetrain.losses.objective import gan_ramp
from vaetrain.models.quantizer import QuantizerConfig
from vaetrain.training.callbacks import RunCheckpoint
from vaetrain.training.diagnostics import Diagnostics, DiagnosticsConfig, DiagnosticsMonitor
from vaetrain.training.features.codebook import CodebookFeature

CONFIG = DiagnosticsConfig(patience=50, smoothing=0.5)


def _history(steps: int = 600, gan_start: int = 200, **changes):
    """A healthy run's logged values; `changes` maps a name to (first step, value) to make it unhealthy."""
    for step in range(steps):
        values = {
            "train/discriminator_accuracy": 0.6 + 0.05 * ((step % 7) / 7),
            "train/kl": 5.0 + 0.1 * ((step % 5) / 5),
            "train/latent_std": 1.0 + 0.02 * ((step % 3) / 3),
            "train/reconstruction": 0.2 * (1 - step / (2 * steps)),
        }
        for name, (first, value) in changes.items():
            if step >= first:
                values[name] = value
        yield step, values, step >= gan_start


def _warnings(**changes) -> list[str]:
    monitor = DiagnosticsMonitor(CONFIG, CodebookFeature.alarms)  # a training unit's alarm among the patterns
    return [w for step, values, gan in _history(**changes) for w in monitor.update(step, values, gan)]


def test_a_healthy_run_raises_no_warning():
    assert _warnings() == []


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"train/discriminator_accuracy": (300, 0.99)}, "discriminator accuracy above 0.95"),
        ({"train/latent_std": (300, 25.0)}, "train/latent_std drifted"),
        ({"train/kl": (300, 0.05)}, "train/kl drifted"),
        ({"train/reconstruction": (250, 0.3)}, "reconstruction loss +"),
        ({"train/codebook_alive": (300, 0.02)}, "of the codebook stayed in use"),
    ],
)
def test_each_failure_pattern_warns_once_after_it_persists(change, expected):
    warnings = _warnings(**change)
    assert len(warnings) == 1 and expected in warnings[0]
    first = next(iter(change.values()))[0]
    assert first + CONFIG.patience - 1 <= int(warnings[0].split(":")[0].split()[1]) <= first + 3 * CONFIG.patience


def test_a_short_blip_does_not_warn():
    monitor = DiagnosticsMonitor(CONFIG)
    warnings = []
    for step, values, gan in _history():
        if 300 <= step < 320:
            values["train/discriminator_accuracy"] = 0.99
        warnings += monitor.update(step, values, gan)
    assert warnings == []


def test_warmup_ramp_by_step():
    """Discriminator alone from step 2 for 3 steps, then the adversarial factor rises by 1/3 per step."""
    assert [gan_ramp(step, start=2, warmup=3) for step in range(10)] == pytest.approx([0, 0, 0, 0, 0, 1 / 3, 2 / 3, 1, 1, 1])
    assert [gan_ramp(step, start=2, warmup=0) for step in range(4)] == [0, 0, 1, 1]  # LDM's step change


def test_warmup_in_training_discriminator_first_then_a_ramped_adversarial_term(datamodule):
    module = tiny_module(loss={"disc_start_step": 2, "disc_warmup_steps": 2, "balance": "fixed", "disc_weight": 0.8})
    rows = []
    original = module._step_logs
    module._step_logs = lambda owner, logs, size: (rows.append(dict(logs)), original(owner, logs, size))[1]
    tiny_trainer(max_steps=7).fit(module, datamodule)
    weights = [float(row["train/adaptive_weight"]) if "train/adaptive_weight" in row else None for row in rows]
    trains_discriminator = ["train/discriminator" in row for row in rows]
    assert trains_discriminator == [False, False, True, True, True, True, True]
    assert weights == pytest.approx([None, None, None, None, 0.4, 0.8, 0.8])  # factor 1/2, then 1, times disc_weight 0.8


def test_keep_last_n_keeps_the_newest_step_checkpoints(tmp_path, datamodule):
    checkpoint = RunCheckpoint(
        dirpath=tmp_path, every_n_train_steps=1, keep_last_n=2, save_last=True, filename="step={step:07d}", auto_insert_metric_name=False
    )
    tiny_trainer(tmp_path, max_steps=5, callbacks=[checkpoint], enable_checkpointing=True).fit(tiny_module(), datamodule)
    assert sorted(p.name for p in tmp_path.glob("*.ckpt")) == ["last.ckpt", "step=0000004.ckpt", "step=0000005.ckpt"]
    assert isinstance(checkpoint, ModelCheckpoint)
    assert torch.load(tmp_path / "last.ckpt", weights_only=True)["vaetrain"]["counters"]["generator_steps"] == 5


def test_last_checkpoint_is_the_final_step_when_the_run_stops_between_saves(tmp_path, datamodule):
    """max_steps 4 with a save every 3 steps: Lightning alone would leave last.ckpt at step 3."""
    checkpoint = RunCheckpoint(dirpath=tmp_path, every_n_train_steps=3, save_last=True)
    tiny_trainer(tmp_path, max_steps=4, callbacks=[checkpoint], enable_checkpointing=True).fit(tiny_module(), datamodule)
    assert torch.load(tmp_path / "last.ckpt", weights_only=True)["vaetrain"]["counters"]["generator_steps"] == 4


def test_the_callback_watches_the_active_units_alarms_with_the_configured_floor():
    """The vq family's codebook unit declares the collapse alarm; `floors` moves its floor."""
    callback = Diagnostics(DiagnosticsConfig(patience=50, smoothing=0.5, floors={"train/codebook_alive": 0.01}))
    callback.setup(None, tiny_module(autoencoder={"family": "vq", "quantizer": QuantizerConfig(codebook_size=32)}), "fit")
    assert callback.monitor.alarms == CodebookFeature.alarms
    alive = [callback.monitor.update(step, {"train/codebook_alive": 0.02}, False) for step in range(200)]
    assert not any(alive)  # 2 % of the codes in use is above the configured 1 %
    with pytest.raises(ConfigError, match="no alarm of this run watches train/codebook_alive"):
        callback.setup(None, tiny_module(), "fit")  # a floor that nothing watches is refused, not ignored
    assert callback.monitor.alarms == ()
