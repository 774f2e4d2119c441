"""The benchmarks run what they name: every race recipe is a list of preset files that exist and parse
together with `vaetrain fit`'s own parser; the overlay that shrinks a preset to the tiny model keeps
tiny.yaml's model, data and trainer."""

import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))
import recipe_race
from vaetrain.cli.fit import model_and_data


def test_every_race_recipe_is_presets_that_exist():
    for name in [*recipe_race.RECIPES, "ldm+eq"]:
        _, configs, _ = recipe_race.recipe(name)
        assert configs and all((ROOT / config).is_file() for config in configs), name
        users = ("configs/tiny.yaml", "configs/vq-tiny.yaml", "configs/vqgan-training.yaml", "configs/rae-tiny.yaml")
        assert configs[0] in users, name  # a preset a user trains, then overlays


@pytest.mark.parametrize("name", ["ldm_lecam", "gradnorm_no_lpips", "vqgan_training", "ms_ssim_l1_lpips", "focal_frequency@lr=4e-4"])
def test_race_recipes_build_what_they_name(name, monkeypatch):
    """Layered exactly as the race layers them: the preset's own values reach the module (vqgan_training
    trains the preset's pooled factor 4, which the race's old restatement had drifted from)."""
    monkeypatch.chdir(ROOT)
    _, configs, overrides = recipe_race.recipe(name)
    module, data, _ = model_and_data([*(arg for config in configs for arg in ("--config", config)), *overrides])
    loss = module.loss_config
    if name == "ldm_lecam":
        assert loss.lecam_weight == 0.1 and loss.perceptual_weight == 1.0
    if name == "gradnorm_no_lpips":
        assert loss.balance == "gradnorm" and loss.perceptual_weight == 0.0 and loss.pooled_reconstruction.factor == 2
    if name == "vqgan_training":
        preset = yaml.safe_load((ROOT / "configs" / "vqgan-training.yaml").read_text())["model"]
        assert loss.pooled_reconstruction.factor == preset["loss"]["pooled_reconstruction"]["factor"] == 4
        assert module.discriminator_config.kind == "vgg16" and module.autoencoder_config.posterior == "fixed"
        assert module.autoencoder_config.block_out_channels == [32, 64, 128, 128] and data.resolution == 64
    if name == "ms_ssim_l1_lpips":
        assert loss.reconstruction == "ms_ssim_l1" and loss.perceptual_weight == 1.0
    if name == "focal_frequency@lr=4e-4":
        assert loss.focal_frequency_weight == 1.0 and loss.perceptual_weight == 0.0
        assert [module.optimizer_config.generator.lr, module.optimizer_config.discriminator.lr] == [4e-4, 4e-4]


def test_a_sweep_names_one_known_setting_and_a_value():
    assert recipe_race.recipe("tiny@ema=0.999")[2] == ["--model.ema.decay=0.999"]
    assert recipe_race.recipe("tiny@gan_start=0")[2] == ["--model.loss.disc_start_step=0"]
    for bad in ("tiny@momentum=0.9", "tiny@lr=", "unknown@lr=1e-4"):
        with pytest.raises(KeyError):
            recipe_race.recipe(bad)


def test_the_diffusers_example_trains_the_tiny_presets_model(tmp_path, monkeypatch):
    """Same model size: the config the example script is given builds the AutoencoderKL that tiny.yaml builds."""
    monkeypatch.chdir(ROOT)
    from diffusers import AutoencoderKL

    from diffusers_example import tiny_model_config

    example = AutoencoderKL.from_config(AutoencoderKL.load_config(tiny_model_config(tmp_path)))
    module, _, _ = model_and_data(["--config", "configs/tiny.yaml"])
    ours = module.autoencoder
    assert [tuple(p.shape) for p in example.parameters()] == [tuple(p.shape) for p in ours.parameters()]


def test_the_tiny_model_overlay_keeps_tiny_yamls_model_data_and_trainer():
    tiny = yaml.safe_load((ROOT / "configs" / "tiny.yaml").read_text())
    overlay = yaml.safe_load((ROOT / "configs" / "race" / "tiny_model.yaml").read_text())
    assert overlay["model"]["autoencoder"] == tiny["model"]["autoencoder"]
    assert overlay["data"] == {k: v for k, v in tiny["data"].items() if k != "path"}
    assert all(tiny["trainer"][k] == v for k, v in overlay["trainer"].items())
