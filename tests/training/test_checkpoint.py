"""The checkpoint schema: one record, the module's key names, old checkpoints, and exports that rebuild the
run's own data source."""

import json
from pathlib import Path

import lightning as L
import pytest
import torch
from diffusers import AutoencoderKL
from lightning.pytorch.callbacks import ModelCheckpoint

from tests.conftest import tiny_module, tiny_trainer, write_images
from vaetrain.checkpoints.schema import (
    AUTOENCODER_PREFIX,
    EMA_COUNT_KEY,
    EMA_PREFIX,
    FORMAT_VERSION,
    RunRecord,
    autoencoder_from_checkpoint,
    autoencoder_weights,
    load_checkpoint,
)
from vaetrain.cli import main
from vaetrain.data import SampleDataModule
from vaetrain.plan import StepCounters
from vaetrain.training.memory_budget import MemoryBudget
from vaetrain.training.memory_search import StepMeasurement

V1 = Path(__file__).parents[1] / "fixtures" / "checkpoint_v1.ckpt"
V1_ARCHITECTURE = dict(autoencoder={"block_out_channels": [4, 8], "norm_num_groups": 2}, discriminator={"base_channels": 4, "num_layers": 1})


def test_the_schema_names_the_modules_keys():
    module = tiny_module()
    module.ema.update_parameters(module.autoencoder)
    state = module.state_dict()
    assert EMA_COUNT_KEY in state and any(k.startswith(EMA_PREFIX) for k in state) and any(k.startswith(AUTOENCODER_PREFIX) for k in state)
    for use_ema, source in ((False, module.autoencoder), (True, module.ema.module)):
        weights = autoencoder_weights(state, use_ema=use_ema)
        assert weights.keys() == source.state_dict().keys()
        assert all(torch.equal(weights[k], v) for k, v in source.state_dict().items())


def test_record_round_trips_through_a_checkpoint_dict():
    record = RunRecord(
        counters=StepCounters(7, 3, 14, 56, 1, 0),
        autoencoder_config={"latent_channels": 4},
        settings={"loss": {"kl_weight": 1e-6}},
        data={"source": {"path": "/data", "kind": "folder"}, "resolution": 64},
        plan={"micro_batch": 4, "accumulate": 2},
        rng=None,
    )
    checkpoint: dict = {}
    record.write_into(checkpoint)
    assert checkpoint["vaetrain"]["version"] == FORMAT_VERSION
    assert RunRecord.read_from(checkpoint) == record


def test_a_newer_format_is_refused_in_one_line():
    with pytest.raises(Exception, match="checkpoint format 99 is newer"):
        RunRecord.read_from({"vaetrain": {"version": 99, "counters": {}, "autoencoder_config": {}}})


def test_a_checkpoint_of_the_previous_format_exports_and_resumes(tmp_path, image_folder):
    model, record = autoencoder_from_checkpoint(V1)
    assert record.version == 1 and record.counters.generator_steps == 3 and record.data["resolution"] == 32
    assert main(["export", str(V1), str(tmp_path / "exported"), "--data.path", str(image_folder), "--data.resolution", "32"]) == 0
    exported = AutoencoderKL.from_pretrained(tmp_path / "exported")
    latents = torch.randn(1, 4, 8, 8)
    with torch.no_grad():
        assert torch.equal(exported.decode(latents).sample, model.decode(latents).sample)

    L.seed_everything(0)
    module = tiny_module(loss={"disc_start_step": 1}, ema={"decay": 0.5}, **V1_ARCHITECTURE)
    datamodule = SampleDataModule(path=str(image_folder), resolution=32, batch_size=2, val_size=2, num_workers=0)
    trainer = tiny_trainer(max_steps=5)
    trainer.fit(module, datamodule, ckpt_path=str(V1), weights_only=True)
    assert (trainer.global_step, module.counters.generator_steps, module.counters.samples_seen) == (5, 5, 10)
    assert datamodule.tracker.seen == 6 + 2 * 2  # the data state it filed under the data module's former name, `ImageDataModule`


def _run(root: Path, datamodule, *, budget: MemoryBudget | None = None, **module_settings):
    module = tiny_module(**module_settings)
    checkpoint = ModelCheckpoint(dirpath=root, save_last=True)
    callbacks = [checkpoint] + ([budget] if budget else [])
    tiny_trainer(root, max_steps=2, callbacks=callbacks, enable_checkpointing=True).fit(module, datamodule)
    return load_checkpoint(root / "last.ckpt")[1]


def test_configs_are_recorded_as_given_and_the_plan_apart(tmp_path, datamodule):
    """A memory plan changes the run (micro-batch 4 x 2 instead of 2 x 4); the recorded configs do not."""
    budget = MemoryBudget(max_memory="8GB")
    budget.probe = lambda micro_batch, checkpointing: StepMeasurement(None if micro_batch > 4 else 2**30, 0.1 * micro_batch)
    record = _run(tmp_path, datamodule, budget=budget, training={"accumulate_grad_batches": 4})
    assert record.settings["training"]["accumulate_grad_batches"] == 4
    assert record.settings["autoencoder"]["gradient_checkpointing"] is False
    assert (record.plan["micro_batch"], record.plan["accumulate"], record.plan["processes"]) == (4, 2, 1)
    assert record.plan["memory"]["max_memory"] == "8GB" and record.plan["memory"]["peak_bytes"] == 2**30


def test_export_of_a_dataset_run_measures_on_its_own_training_images(tmp_path):
    """The record holds the whole source (kind, column, split): `vaetrain export` without --data.path
    reads the run's Hugging Face dataset, not a folder of the same path."""
    import datasets

    write_images(tmp_path / "pngs", 10)
    pictures = [{"bytes": p.read_bytes(), "path": None} for p in sorted((tmp_path / "pngs").rglob("*.png"))]
    features = datasets.Features({"picture": datasets.Image()})
    datasets.DatasetDict({"train": datasets.Dataset.from_dict({"picture": pictures}, features=features)}).save_to_disk(str(tmp_path / "hf"))
    datamodule = SampleDataModule(path=str(tmp_path / "hf"), image_column="picture", resolution=32, batch_size=2, val_size=1, num_workers=0)
    record = _run(tmp_path / "run", datamodule)
    assert record.data["source"]["kind"] == "hf" and record.data["source"]["image_column"] == "picture"
    assert main(["export", str(tmp_path / "run" / "last.ckpt"), str(tmp_path / "exported")]) == 0
    statistics = json.loads((tmp_path / "exported" / "latent_statistics.json").read_text())
    assert statistics["count"] == len(pictures) - 1  # the train part: all rows but the validation one
