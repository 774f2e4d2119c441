"""The command line as a user runs it: presets parse, bad input fails in one line, fit -> resume -> export."""

import re
from pathlib import Path

import pytest
import torch
from diffusers import AutoencoderKL

from tests.conftest import tiny_diffusers_kl
from vaetrain.cli import main
from vaetrain.cli.fit import OneLineErrors, VaetrainCLI
from vaetrain.data.datamodule import SampleDataModule
from vaetrain.training.module import AutoencoderModule

CONFIGS = sorted((Path(__file__).parents[1] / "configs").glob("*.yaml"))
SMALL = [
    "--model.autoencoder.block_out_channels=[8,16]",
    "--model.autoencoder.norm_num_groups=4",
    "--model.discriminator.base_channels=8",
    "--model.loss.perceptual_network=alex",
    "--model.loss.disc_start_step=2",
    "--data.resolution=32",
    "--data.batch_size=2",
    "--data.num_workers=0",
    "--trainer.enable_progress_bar=false",
    "--trainer.val_check_interval=2",
    "--trainer.limit_val_batches=1",
    "--checkpoint.every_n_train_steps=2",
    "--grid.every_n_steps=2",
    "--export.latent_statistics_images=8",
    "--trainer.max_steps=2",
]


class ParseOnly(VaetrainCLI):
    """`vaetrain fit`'s own parser (every block, one-line errors), built once: nothing is instantiated or run."""

    def before_instantiate_classes(self) -> None:
        pass

    def instantiate_classes(self) -> None:
        pass

    def _run_subcommand(self, subcommand: str) -> None:
        pass


def test_every_preset_parses():
    assert {p.name for p in CONFIGS} >= {"tiny.yaml", "sd-vae-f8c4.yaml", "sd-vae-finetune-decoder.yaml", "f8c16.yaml"}
    cli = ParseOnly(
        AutoencoderModule, SampleDataModule, args=["fit", "--config", str(CONFIGS[0])], auto_configure_optimizers=False, parser_class=OneLineErrors
    )  # the parser `vaetrain fit` builds (run_lightning's arguments)
    for config in CONFIGS:
        printed = cli.parser.dump(cli.parser.parse_args(["fit", "--config", str(config)]))  # what --print_config prints
        assert "block_out_channels" in printed or "pretrained" in config.read_text(), config


def _fit(root: Path, *extra: str) -> int:
    return main(["fit", "--config", str(CONFIGS[[p.name for p in CONFIGS].index("tiny.yaml")]), *SMALL, f"--trainer.default_root_dir={root}", *extra])


def test_unknown_config_key_is_named(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        _fit(tmp_path / "run", "--model.loss.kl_wieght=1")
    assert exit_info.value.code != 0
    assert "kl_wieght" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("override", "named"),
    [
        ("--data.resolution=33", "data.resolution=33"),
        ("--data.path={tmp}/missing", "missing"),
        ("--data.path={tmp}/empty", "no images"),
        ("--model.autoencoder.pretrained={tmp}/no-such-vae", "no-such-vae"),
        ("--memory.max_memory=8 parsecs", "memory.max_memory: '8 parsecs'"),
        ("--memory.max_memory=8GB", "memory.max_memory measures CUDA memory; this run is on cpu"),
    ],
)
def test_bad_input_fails_in_one_line_before_training(tmp_path, capsys, override, named):
    (tmp_path / "empty").mkdir()
    code = _fit(tmp_path / "run", override.format(tmp=tmp_path))
    error = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert error[-1].startswith("vaetrain: error:") and named in error[-1]
    assert not (tmp_path / "run").exists()


def test_fit_resume_and_export_from_the_command_line(tmp_path, image_folder):
    run = tmp_path / "run"
    assert _fit(run, f"--data.path={image_folder}", "--trainer.max_steps=4") == 0
    assert (run / "checkpoints" / "last.ckpt").is_file()
    assert list((run / "reconstructions").glob("step_*.png"))
    assert list(run.glob("lightning_logs/version_0/events.out.tfevents.*"))
    assert (run / "lightning_logs" / "version_0" / "config.yaml").is_file()
    first = AutoencoderKL.from_pretrained(run / "diffusers")

    assert _fit(run, f"--data.path={image_folder}", "--trainer.max_steps=6", "--ckpt_path=last") == 0
    checkpoint = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["vaetrain"]["counters"]["generator_steps"] == 6
    assert checkpoint["vaetrain"]["counters"]["discriminator_steps"] == 4

    assert main(["export", str(run / "checkpoints" / "last.ckpt"), str(tmp_path / "exported")]) == 0
    exported = AutoencoderKL.from_pretrained(tmp_path / "exported")
    resumed = AutoencoderKL.from_pretrained(run / "diffusers")
    latents = torch.randn(1, 4, 16, 16)
    with torch.no_grad():
        assert torch.equal(exported.decode(latents).sample, resumed.decode(latents).sample)
        assert not torch.equal(first.decode(latents).sample, resumed.decode(latents).sample)


def test_plain_strategy_names_become_what_the_module_needs(tmp_path, image_folder):
    """`--trainer.strategy ddp` (1 process here) runs as DDP with unused-parameter detection, and the run's
    saved config says so; an unset precision is resolved and saved the same way."""
    import yaml

    run = tmp_path / "run"
    assert _fit(run, f"--data.path={image_folder}", "--trainer.strategy=ddp", "--trainer.accelerator=cpu", "--trainer.max_steps=1") == 0
    saved = yaml.safe_load(next(run.glob("lightning_logs/version_*/config.yaml")).read_text())
    assert saved["trainer"]["strategy"] == "ddp_find_unused_parameters_true"
    assert saved["trainer"]["precision"] in ("bf16-mixed", "32-true")


def test_help_lists_every_command(capsys):
    assert main(["--help"]) == 0
    listed = [line.split()[0] for line in capsys.readouterr().out.splitlines() if line.startswith("  ")]
    assert listed == ["fit", "validate", "distill", "eval", "recon", "probe", "export", "convert"]
    assert main(["distill", "--help"]) == 0 and "--teacher" in capsys.readouterr().out
    for command in listed[3:]:  # and each answers its own --help
        with pytest.raises(SystemExit) as exit_info:
            main([command, "--help"])
        assert exit_info.value.code == 0


def test_an_error_raised_in_a_loader_worker_is_one_line(tmp_path, capsys):
    """A folder that is mostly junk: the worker's ConfigError reaches the user as its own message, not as
    PyTorch's re-raised worker traceback."""
    from tests.conftest import write_images

    junk = tmp_path / "junk"
    junk.mkdir()
    for i in range(70):
        (junk / f"junk_{i:02d}.jpg").write_bytes(b"not an image")
    write_images(junk, 2)
    code = _fit(tmp_path / "run", f"--data.path={junk}", "--data.num_workers=1", "--trainer.val_check_interval=100")
    error = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert error[-1].startswith("vaetrain: error: data: 64 images in a row from ") and "not an image" in error[-1]
    assert not any("Traceback" in line for line in error)


def test_export_and_eval_name_the_images_alike(tmp_path, image_folder):
    import json

    run = tmp_path / "run"
    assert _fit(run, f"--data.path={image_folder}", "--export.enabled=false") == 0
    options = ["--data.path", str(image_folder), "--data.resolution", "32", "--data.max_images", "5"]
    assert main(["export", str(run / "checkpoints" / "last.ckpt"), str(tmp_path / "exported"), *options]) == 0
    assert json.loads((tmp_path / "exported" / "latent_statistics.json").read_text())["count"] == 5
    assert main(["eval", str(tmp_path / "exported"), *options, "--metrics", "psnr", "--out", str(tmp_path / "eval")]) == 0
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text())[0]["images"] == 5


def test_the_python_api_trains_with_plain_ddp(datamodule):
    """`L.Trainer(strategy="ddp")` as the README's Python example would write it: the module turns on DDP's
    unused-parameter detection before the model is wrapped (each optimizer's step leaves the other network
    without gradients, which plain DDP rejects on the second step)."""
    from tests.conftest import tiny_module, tiny_trainer

    module = tiny_module(loss={"disc_start_step": 1})
    trainer = tiny_trainer(max_steps=3, strategy="ddp")
    trainer.fit(module, datamodule)
    assert trainer.strategy._ddp_kwargs["find_unused_parameters"] and module.counters.discriminator_steps == 2


def test_distill_from_the_command_line(tmp_path, image_folder):
    """`vaetrain distill --teacher FOLDER`: a tiny autoencoder trained on the teacher's latents, exported as
    an AutoencoderTiny folder whose encoder speaks the teacher's scaled latents (scaling_factor 1)."""
    from diffusers import AutoencoderTiny

    teacher = tiny_diffusers_kl(seed=0)
    teacher.save_pretrained(tmp_path / "teacher")
    run = tmp_path / "student"
    preset = str(CONFIGS[[p.name for p in CONFIGS].index("taesd-tiny.yaml")])
    code = main(
        [
            "distill",
            "--teacher",
            str(tmp_path / "teacher"),
            "--config",
            preset,
            f"--data.path={image_folder}",
            "--model.autoencoder.architecture={encoder_block_out_channels: [8, 8], decoder_block_out_channels: [8, 8], "
            "num_encoder_blocks: [1, 1], num_decoder_blocks: [1, 1]}",
            *[a for a in SMALL if not a.startswith(("--model.autoencoder", "--model.loss.perceptual"))],
            f"--trainer.default_root_dir={run}",
        ]
    )
    assert code == 0
    student = AutoencoderTiny.from_pretrained(run / "diffusers")
    assert student.config.scaling_factor == 1.0 and (run / "checkpoints" / "last.ckpt").is_file()


def test_distill_without_a_teacher_is_one_line(capsys):
    assert main(["distill", "--config", "configs/taesd.yaml"]) == 2
    assert "--teacher" in capsys.readouterr().err


def test_the_cpu_dc_ae_preset_trains_and_exports_from_the_command_line(tmp_path, image_folder):
    from diffusers import AutoencoderDC

    preset = str(CONFIGS[[p.name for p in CONFIGS].index("dc-ae-tiny.yaml")])
    small = [a for a in SMALL if not a.startswith(("--model.autoencoder", "--data.resolution"))]
    code = main(["fit", "--config", preset, f"--data.path={image_folder}", "--data.resolution=64", *small, f"--trainer.default_root_dir={tmp_path / 'run'}"])
    assert code == 0
    model = AutoencoderDC.from_pretrained(tmp_path / "run" / "diffusers")
    assert model.config.latent_channels == 32 and model.config.scaling_factor != 1.0  # measured at export


def test_fit_on_six_band_16_bit_tiffs_with_a_resolution_schedule_from_the_command_line(tmp_path):
    from fixtures.synthetic import write_multiband_tiffs

    write_multiband_tiffs(tmp_path / "tiles", 8, bands=6, size=40)
    beyond_rgb = [
        f"--data.path={tmp_path / 'tiles'}",
        "--data.channels=6",
        "--data.bit_depth=16",
        "--data.normalization=percentile",
        "--data.display_channels=[3,2,1]",
        "--data.resolution_schedule=[[1,48]]",
        "--data.val_size=2",
        "--model.autoencoder.in_channels=6",
        "--model.autoencoder.out_channels=6",
        "--model.loss.perceptual_channels=each",
    ]
    assert _fit(tmp_path / "run", *beyond_rgb) == 0
    exported = tmp_path / "run" / "diffusers"
    assert AutoencoderKL.from_pretrained(exported).config.in_channels == 6
    assert (exported / "pixel_format.json").is_file() and (tmp_path / "run" / "reconstructions" / "step_0000002.png").is_file()
    checkpoint = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)
    assert [p["resolution"] for p in checkpoint["vaetrain"]["plan"]["resolution_phases"]] == [32, 48]
    assert checkpoint["vaetrain"]["data"]["pixels"]["display"] == [3, 2, 1]


def test_presets_that_name_a_reference_carry_its_values():
    """zelaki/eqvae's eqvae_config.yaml (batch 10, accumulate_grad_batches 2, base lr 4.5e-6 scaled by LDM's
    rule) and TAESD's author's description (madebyollin/taesd #2, #11: conditional GAN on the latents, mostly
    adversarial, LPIPS below the adversarial weight, Adam 3e-4 (0.9, 0.9) amsgrad, batch 16)."""
    import yaml

    presets = {p.name: yaml.safe_load(p.read_text()) for p in CONFIGS}
    eq = presets["sd-vae-eq-finetune.yaml"]
    assert eq["model"]["training"]["accumulate_grad_batches"] == 2 and eq["data"]["batch_size"] == 10
    assert eq["model"]["optimizer"]["scale_lr"] is True and eq["model"]["optimizer"]["generator"]["lr"] == 4.5e-6
    for name in ("taesd.yaml", "taef16.yaml"):
        model = presets[name]["model"]
        assert model["discriminator"]["condition_on_latents"] is True and presets[name]["data"]["batch_size"] == 16
        for network in ("generator", "discriminator"):
            assert model["optimizer"][network] == {"name": "adam", "lr": 3.0e-4, "betas": [0.9, 0.9], "amsgrad": True}
        loss = model["loss"]
        assert loss["balance"] == "fixed" and loss["reconstruction"] == "l2" and loss["perceptual_weight"] < loss["disc_weight"]


def test_image_commands_take_fits_data_keys_with_fits_defaults():
    """eval, probe and export read `--data.*` from the data module's own specification: the same keys, the
    same defaults (batch size, workers, source, split...)."""
    import argparse
    import inspect

    from vaetrain.cli.options import IMAGE_KEYS, image_options

    parser = argparse.ArgumentParser()
    image_options(parser, path_help="p", resolution_help="r", max_images=None)
    parsed = vars(parser.parse_args([]))
    parameters = inspect.signature(SampleDataModule.__init__).parameters
    for key in IMAGE_KEYS:
        if key not in ("path", "resolution"):  # the commands' own meaning: required images, a crop size or native
            assert parsed[f"data_{key}"] == parameters[key].default, key
    assert parsed["data_batch_size"] == 4 and parsed["data_num_workers"] is None


@pytest.mark.parametrize("overlay", [None, "race/fsq.yaml"])
def test_the_cpu_vq_preset_and_fsq_train_and_export_from_the_command_line(tmp_path, image_folder, overlay):
    from diffusers import VQModel

    configs = ["--config", str(CONFIGS[0].parent / "vq-tiny.yaml")] + (["--config", str(CONFIGS[0].parent / overlay)] if overlay else [])
    code = main(["fit", *configs, f"--data.path={image_folder}", *SMALL, f"--trainer.default_root_dir={tmp_path / 'run'}"])
    assert code == 0
    model = VQModel.from_pretrained(tmp_path / "run" / "diffusers")
    assert model.config.num_vq_embeddings == (1000 if overlay else 1024) and model.config.scaling_factor != 0.18215


@pytest.mark.slow  # 11 s: a real `vaetrain fit` in a subprocess
def test_fit_prints_no_line_a_user_cannot_act_on(tmp_path, image_folder):
    """Lightning's advertisement, the TPU/HPU lines, the seed and AMP notes and the known-harmless warnings
    (LeafSpec, the model summary under bf16, manual optimisation with ModelCheckpoint, frozen modules in eval
    mode) are dropped at their source, in a real `vaetrain fit`; what remains still prints."""
    import subprocess
    import sys

    from vaetrain.cli.quiet import NOISE_LOGS, NOISE_WARNINGS

    preset = str(CONFIGS[[p.name for p in CONFIGS].index("tiny.yaml")])
    command = [sys.executable, "-m", "vaetrain.cli", "fit", "--config", preset, *SMALL, f"--data.path={image_folder}"]
    command += ["--trainer.precision=bf16-mixed", "--checkpoint.every_n_train_steps=1", f"--trainer.default_root_dir={tmp_path / 'run'}"]
    printed = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=Path(__file__).parents[1])
    assert printed.returncode == 0, printed.stderr[-2000:]
    noisy = [p for p in (*NOISE_LOGS, *NOISE_WARNINGS) if re.search(p.lstrip("^").rstrip("$"), printed.stdout + printed.stderr, re.M)]
    assert not noisy, noisy
    assert "GPU available" in printed.stderr  # Lightning's own lines that say something still print


def test_data_channels_alone_sets_the_autoencoders_channels(tmp_path, capsys):
    """`--data.channels 6` is enough for a 6-band folder: the autoencoder's channels, left at 3, follow it (the
    discriminator follows the autoencoder); an explicit conflicting value stays a one-line error."""
    from fixtures.synthetic import write_multiband_tiffs

    write_multiband_tiffs(tmp_path / "tiles", 6, bands=6, size=40)
    bands = [f"--data.path={tmp_path / 'tiles'}", "--data.channels=6", "--data.bit_depth=16", "--data.val_size=2", "--model.loss.perceptual_channels=each"]
    assert _fit(tmp_path / "run", *bands) == 0
    assert AutoencoderKL.from_pretrained(tmp_path / "run" / "diffusers").config.out_channels == 6
    assert _fit(tmp_path / "bad", *bands, "--model.autoencoder.in_channels=4", "--model.autoencoder.out_channels=4") == 2
    assert "data.channels=6, but the autoencoder reads 4" in capsys.readouterr().err


def test_eval_checks_its_models_and_images_before_loading_any_network(tmp_path, image_folder, monkeypatch, capsys):
    """A missing model, a file that is not a model, or missing images: one line each, before LPIPS or the
    Inception network is even built (they may need a download)."""
    import vaetrain.evaluation.evaluate as evaluate_module

    def no_network(*args, **kwargs):
        raise AssertionError("a network was built before the arguments were checked")

    monkeypatch.setattr(evaluate_module, "build_lpips_metric", no_network)
    monkeypatch.setattr(evaluate_module, "build_inception", no_network)
    notes = tmp_path / "notes.txt"
    notes.write_text("not a model")
    cases = [
        ([str(tmp_path / "missing.ckpt"), "--data.path", str(image_folder)], "missing.ckpt' does not exist"),
        ([str(notes), "--data.path", str(image_folder)], "notes.txt' is a file but not a model"),
        (["stabilityai/sd-vae-ft-mse", "--data.path", str(tmp_path / "nowhere")], "nowhere"),
    ]
    for arguments, message in cases:
        assert main(["eval", *arguments, "--out", str(tmp_path / "out")]) == 2
        assert message in capsys.readouterr().err
