import json

import pytest
import torch
from diffusers import AutoencoderKL
from lightning.pytorch.callbacks import ModelCheckpoint

from tests.conftest import tiny_module, tiny_trainer
from vaetrain.data import ImageSet, SourceSpec, evaluation_images, images_of
from vaetrain.errors import ConfigError
from vaetrain.evaluation import measure_latent_statistics
from vaetrain.export import export_checkpoint
from vaetrain.training.checkpoint import autoencoder_from_checkpoint


@pytest.fixture
def checkpoint(tmp_path, datamodule):
    module = tiny_module(ema={"decay": 0.5})
    trainer = tiny_trainer(tmp_path, max_steps=2, callbacks=[ModelCheckpoint(dirpath=tmp_path, save_last=True)], enable_checkpointing=True)
    trainer.fit(module, datamodule)
    return tmp_path / "last.ckpt", module


def test_export_reloads_with_identical_outputs(tmp_path, checkpoint, image_folder):
    path, module = checkpoint
    out = export_checkpoint(path, tmp_path / "exported", images=ImageSet(SourceSpec(path=str(image_folder)), resolution=32))
    reloaded = AutoencoderKL.from_pretrained(out).eval()
    source, _ = autoencoder_from_checkpoint(path)
    ema = module.ema.module.eval()
    images = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        for model in (source, ema):
            assert torch.equal(model.encode(images).latent_dist.mean, reloaded.encode(images).latent_dist.mean)
            latents = torch.randn(2, 4, 16, 16)
            assert torch.equal(model.decode(latents).sample, reloaded.decode(latents).sample)


def test_export_writes_the_measured_latent_scale(tmp_path, checkpoint, datamodule, image_folder):
    path, _ = checkpoint
    out = export_checkpoint(path, tmp_path / "exported", images=ImageSet(SourceSpec(path=str(image_folder)), resolution=32))
    config = json.loads((out / "config.json").read_text())
    statistics = json.loads((out / "latent_statistics.json").read_text())
    model, _ = autoencoder_from_checkpoint(path)
    loader = evaluation_images(ImageSet(SourceSpec(path=str(image_folder)), resolution=32), max_images=256)
    expected = measure_latent_statistics(model, (images_of(b) for b in loader))
    assert config["scaling_factor"] == pytest.approx(1 / expected.std) == pytest.approx(statistics["scaling_factor"])
    assert config["shift_factor"] == pytest.approx(expected.mean)


def test_export_rejects_what_is_not_a_vaetrain_checkpoint(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        export_checkpoint(tmp_path / "missing.ckpt", tmp_path / "out")
    foreign = tmp_path / "foreign.ckpt"
    torch.save({"state_dict": {}}, foreign)
    with pytest.raises(ConfigError, match="not a vaetrain checkpoint"):
        export_checkpoint(foreign, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_export_writes_per_channel_statistics_and_the_training_size(tmp_path, checkpoint):
    """diffusers' latents_mean / latents_std per channel, and sample_size = the training resolution (32 here;
    AutoencoderKL's default would set its tiling threshold to a size the model never saw)."""
    path, _ = checkpoint
    out = export_checkpoint(path, tmp_path / "exported")
    config = json.loads((out / "config.json").read_text())
    statistics = json.loads((out / "latent_statistics.json").read_text())
    assert config["latents_mean"] == pytest.approx(statistics["channel_mean"]) and len(config["latents_mean"]) == 4
    assert config["latents_std"] == pytest.approx(statistics["channel_std"])
    assert config["sample_size"] == 32
