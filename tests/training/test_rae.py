"""A tiny RAE trains with the DINO discriminator from the command line, resumes bit-exactly, exports and reloads
in diffusers' AutoencoderRAE with identical outputs; its encoder and the discriminator's backbone never change;
DiffAugment reads both the real and the fake images."""

from pathlib import Path

import lightning as L
import torch
import yaml
from diffusers import AutoencoderRAE
from lightning.pytorch.callbacks import ModelCheckpoint

from tests.conftest import tiny_trainer
from tests.models.test_rae_parts import DINO, RAE
from vaetrain.checkpoints.schema import autoencoder_from_checkpoint
from vaetrain.cli import main
from vaetrain.data import SampleDataModule
from vaetrain.losses import LossConfig
from vaetrain.models import AutoencoderConfig, DiscriminatorConfig, EMAConfig
from vaetrain.models import dino_discriminator as dino_module
from vaetrain.models.families import decode, encode, family_of
from vaetrain.training.config import GanOptimizers, TrainingConfig
from vaetrain.training.module import AutoencoderModule
from vaetrain.training.optim import OptimizerConfig

CONFIGS = Path(__file__).parents[2] / "configs"
CLI = [  # rae-tiny.yaml at 32 px (4 x 4 tokens, with the overlay `_at_32px`), batch 2, the GAN from the first step
    "--model.discriminator.dino_input_size=32",
    "--model.loss.disc_start_step=0",
    "--model.loss.disc_warmup_steps=0",
    "--data.resolution=32",
    "--data.batch_size=2",
    "--data.num_workers=0",
    "--data.val_size=2",
    "--trainer.enable_progress_bar=false",
    "--trainer.limit_val_batches=0",
    "--checkpoint.every_n_train_steps=2",
    "--grid.every_n_steps=100",
    "--export.latent_statistics_images=8",
    "--trainer.max_steps=4",
]


def _module() -> AutoencoderModule:
    torch.manual_seed(0)
    adamw = OptimizerConfig(name="adamw", lr=2e-4, betas=(0.9, 0.95), scheduler="cosine_with_min_lr", min_lr_rate=0.1, warmup_steps=1)
    return AutoencoderModule(
        autoencoder=AutoencoderConfig(family="rae", train_encoder=False, architecture=RAE),
        discriminator=DiscriminatorConfig(kind="dino", dino_architecture=DINO, dino_key_depths=(1,), dino_input_size=32, diffaugment_prob=1.0),
        loss=LossConfig(perceptual_weight=0.0, kl_weight=0.0, sample_posterior=False, disc_weight=0.75, disc_start_step=1),
        optimizer=GanOptimizers(generator=adamw, discriminator=adamw),
        ema=EMAConfig(decay=0.9978),
        training=TrainingConfig(schedule_steps=4),  # the cosine's horizon, the same for the run stopped at 2 steps
    )


def _run(root: Path, folder: Path, max_steps: int, ckpt_path: str | None = None) -> AutoencoderModule:
    L.seed_everything(0)
    module = _module()
    checkpoint = ModelCheckpoint(dirpath=root, save_last=True, every_n_train_steps=2)
    validation = dict(limit_val_batches=1, val_check_interval=2, check_val_every_n_epoch=None)  # a resume crosses one
    trainer = tiny_trainer(root, max_steps=max_steps, callbacks=[checkpoint], enable_checkpointing=True, **validation)
    data = SampleDataModule(path=str(folder), resolution=32, batch_size=2, val_size=2, num_workers=0, seed=0)
    trainer.fit(module, data, ckpt_path=ckpt_path, weights_only=True)
    return module


def test_tiny_rae_resumes_bit_exactly_with_its_encoder_and_the_discriminators_backbone_unchanged(tmp_path, image_folder):
    initial = _module()
    straight = _run(tmp_path / "straight", image_folder, 4)
    _run(tmp_path / "resumed", image_folder, 2)
    resumed = _run(tmp_path / "resumed", image_folder, 4, ckpt_path=str(tmp_path / "resumed" / "last.ckpt"))
    assert resumed.counters == straight.counters and straight.counters.discriminator_steps == 3
    for key, value in straight.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[key]), key
    trained = {k: v for k, v in straight.state_dict().items() if not torch.equal(v, initial.state_dict()[k])}
    assert any(k.startswith("autoencoder.decoder.") for k in trained) and any(k.startswith("discriminator.heads.") for k in trained)
    assert not [k for k in trained if k.startswith(("autoencoder.encoder.", "discriminator.backbone.", "ema.module.encoder."))]


def test_diff_augment_reads_the_real_and_the_fake_images(monkeypatch, image_folder, tmp_path):
    seen = []

    def spy(images, prob, cutout):
        seen.append(images.detach().clone())
        return images

    monkeypatch.setattr(dino_module, "diff_augment", spy)
    module = _run(tmp_path / "run", image_folder, 2)  # step 0: generator alone; step 1: both networks
    assert module.counters.discriminator_steps == 1
    generator_read, discriminator_read = seen[-2], seen[-1]  # the adversarial term's fakes, then real + fake together
    assert len(discriminator_read) == 2 * len(generator_read)
    assert torch.allclose(discriminator_read[len(generator_read) :], generator_read)  # the same (detached) reconstruction
    assert not torch.allclose(discriminator_read[: len(generator_read)], generator_read)  # the real images


def _at_32px(folder: Path) -> Path:
    preset = yaml.safe_load((CONFIGS / "rae-tiny.yaml").read_text())
    overlay = {"model": {"autoencoder": {"architecture": preset["model"]["autoencoder"]["architecture"] | {"encoder_input_size": 32}}}}
    (folder / "at_32px.yaml").write_text(yaml.safe_dump(overlay))
    return folder / "at_32px.yaml"


def test_tiny_rae_trains_from_the_command_line_exports_and_reloads_identically(tmp_path, image_folder):
    run = tmp_path / "run"
    configs = ["--config", str(CONFIGS / "rae-tiny.yaml"), "--config", str(_at_32px(tmp_path))]
    assert main(["fit", *configs, *CLI, f"--data.path={image_folder}", f"--trainer.default_root_dir={run}"]) == 0
    assert main(["export", str(run / "checkpoints" / "last.ckpt"), str(tmp_path / "exported")]) == 0
    exported, at_end = (AutoencoderRAE.from_pretrained(folder).eval() for folder in (tmp_path / "exported", run / "diffusers"))
    assert torch.tensor(exported.config.latents_mean).shape == (64, 1, 1)  # measured, per channel, as encode reads it
    images = torch.rand(2, 3, 32, 32) * 2 - 1
    for model in (exported, at_end):  # each with latent statistics of its own images (`export`: all, the callback: 8)
        trained, _ = autoencoder_from_checkpoint(run / "checkpoints" / "last.ckpt", use_ema=True)
        family_of(trained).set_latent_fields(trained, {k: model.config[k] for k in ("latents_mean", "latents_std")})
        with torch.no_grad():
            assert torch.equal(decode(model, encode(model, images).mode()), decode(trained, encode(trained, images).mode()))
    with torch.no_grad():
        assert encode(exported, images).mode().shape == (2, 64, 4, 4)
