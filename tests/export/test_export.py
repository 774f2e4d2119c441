import json

import pytest
import torch
from diffusers import AutoencoderKL
from lightning.pytorch.callbacks import ModelCheckpoint

from tests.conftest import tiny_module, tiny_trainer
from vaetrain.checkpoints.schema import autoencoder_from_checkpoint
from vaetrain.data import SampleSet, SourceSpec, evaluation_samples, pixels_of
from vaetrain.errors import ConfigError
from vaetrain.evaluation import measure_latent_statistics
from vaetrain.export import export_checkpoint


@pytest.fixture
def checkpoint(tmp_path, datamodule):
    module = tiny_module(ema={"decay": 0.5})
    trainer = tiny_trainer(tmp_path, max_steps=2, callbacks=[ModelCheckpoint(dirpath=tmp_path, save_last=True)], enable_checkpointing=True)
    trainer.fit(module, datamodule)
    return tmp_path / "last.ckpt", module


def test_export_reloads_with_identical_outputs(tmp_path, checkpoint, image_folder):
    path, module = checkpoint
    out = export_checkpoint(path, tmp_path / "exported", images=SampleSet(SourceSpec(path=str(image_folder)), resolution=32))
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
    out = export_checkpoint(path, tmp_path / "exported", images=SampleSet(SourceSpec(path=str(image_folder)), resolution=32))
    config = json.loads((out / "config.json").read_text())
    statistics = json.loads((out / "latent_statistics.json").read_text())
    model, _ = autoencoder_from_checkpoint(path)
    loader = evaluation_samples(SampleSet(SourceSpec(path=str(image_folder)), resolution=32), max_images=256)
    expected = measure_latent_statistics(model, (pixels_of(b) for b in loader))
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


def test_export_writes_one_convention_and_the_training_size(tmp_path, checkpoint):
    """The default (AutoencoderKL: SD3/FLUX's scale_shift) writes no per-channel fields, so no SDXL-style
    pipeline mixes them with a global scale; per_channel writes them with scaling_factor 1. sample_size =
    the training resolution (32 here; AutoencoderKL's default would set its tiling threshold to a size the
    model never saw)."""
    path, _ = checkpoint
    out = export_checkpoint(path, tmp_path / "exported")
    config = json.loads((out / "config.json").read_text())
    statistics = json.loads((out / "latent_statistics.json").read_text())
    assert config["latents_mean"] is None and config["latents_std"] is None
    assert config["scaling_factor"] == pytest.approx(statistics["scaling_factor"]) and config["shift_factor"] == pytest.approx(statistics["shift_factor"])
    assert config["sample_size"] == 32
    per_channel = json.loads((export_checkpoint(path, tmp_path / "per_channel", latents="per_channel") / "config.json").read_text())
    assert per_channel["latents_mean"] == pytest.approx(statistics["channel_mean"]) and len(per_channel["latents_mean"]) == 4
    assert per_channel["latents_std"] == pytest.approx(statistics["channel_std"])
    assert per_channel["scaling_factor"] == 1.0 and per_channel["shift_factor"] is None


def _sdxl(vae, latents):
    """diffusers' pipeline_stable_diffusion_xl_img2img.py, `prepare_latents`, written out."""
    config = vae.config
    if config.latents_mean is not None and config.latents_std is not None:
        mean, std = (torch.tensor(v).view(1, 4, 1, 1) for v in (config.latents_mean, config.latents_std))
        return (latents - mean) * config.scaling_factor / std
    return config.scaling_factor * latents


def _sd3_flux(vae, latents):
    """diffusers' pipeline_stable_diffusion_3_img2img.py / pipeline_flux_img2img.py, written out."""
    return (latents - vae.config.shift_factor) * vae.config.scaling_factor


def _wan_qwen(vae, latents):
    """diffusers' pipeline_wan_video2video.py, `prepare_latents`, written out (per channel, no scaling_factor)."""
    mean = torch.tensor(vae.config.latents_mean).view(1, 4, 1, 1)
    return (latents - mean) * (1.0 / torch.tensor(vae.config.latents_std).view(1, 4, 1, 1))


@pytest.mark.parametrize("convention, formulas", [("scale_shift", (_sd3_flux,)), ("per_channel", (_sdxl, _wan_qwen))])
def test_each_pipeline_familys_own_formula_gives_unit_latents(tmp_path, checkpoint, image_folder, convention, formulas):
    """The export's fields, read by the formula each pipeline family applies in diffusers' source, give
    latents of mean 0 and std 1 on the images they were measured on (over all elements for scale_shift, per
    channel for per_channel); vaetrain's own `pipeline_normalize` computes the same."""
    from vaetrain.models.latent_space import pipeline_normalize

    path, _ = checkpoint
    images = SampleSet(SourceSpec(path=str(image_folder)), resolution=32)
    vae = AutoencoderKL.from_pretrained(export_checkpoint(path, tmp_path / convention, images=images, latents=convention)).eval()
    generator = torch.Generator().manual_seed(0)  # the statistics' own draws
    with torch.no_grad():
        latents = torch.cat([vae.encode(pixels_of(b)).latent_dist.sample(generator=generator) for b in evaluation_samples(images, max_images=256)])
    for formula in formulas:
        normalised = formula(vae, latents)
        dims = (0, 2, 3) if convention == "per_channel" else (0, 1, 2, 3)
        torch.testing.assert_close(normalised.mean(dim=dims), torch.zeros_like(normalised.mean(dim=dims)), atol=1e-4, rtol=0)
        torch.testing.assert_close(normalised.std(dim=dims, correction=0), torch.ones_like(normalised.mean(dim=dims)), atol=1e-4, rtol=0)
        torch.testing.assert_close(pipeline_normalize(vae.config, latents), normalised)
    if convention == "scale_shift":  # an SDXL-style pipeline reads it as scale only: unit variance, no per-channel mix-up
        assert _sdxl(vae, latents).std().item() == pytest.approx(1.0, abs=1e-4)


def test_a_class_without_per_channel_fields_refuses_them():
    from tests.training.test_families import TINY
    from vaetrain.models import AutoencoderConfig, build_autoencoder
    from vaetrain.models.latent_space import convention_fields

    model = build_autoencoder(AutoencoderConfig(**TINY))
    with pytest.raises(ConfigError, match="export latents=per_channel: AutoencoderTiny has no fields for it"):
        convention_fields(model, "per_channel", 0.0, 1.0, [0.0] * 4, [1.0] * 4)
