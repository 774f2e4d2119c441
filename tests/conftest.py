"""Tiny models, a random-backbone LPIPS and generated images: no network, seconds per test."""

from __future__ import annotations

import warnings
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from PIL import Image

from vaetrain.data import SampleDataModule
from vaetrain.losses import LossConfig, build_perceptual_loss
from vaetrain.models import AutoencoderConfig, DiscriminatorConfig, EMAConfig
from vaetrain.training.config import GanOptimizers, SpeedConfig, TrainingConfig
from vaetrain.training.module import AutoencoderModule
from vaetrain.training.optim import OptimizerConfig
from vaetrain.training.validation import ValidationConfig

warnings.filterwarnings("ignore", ".*pretrained.*")
warnings.filterwarnings("ignore", ".*weight enum.*")
warnings.filterwarnings("ignore", ".*eval mode.*")

_TINY_PATCHGAN = {"base_channels": 8, "num_layers": 2}
TINY_AUTOENCODER = dict(block_out_channels=[8, 16], layers_per_block=1, norm_num_groups=4, latent_channels=4)


def tiny_autoencoder_config(**overrides) -> AutoencoderConfig:
    return AutoencoderConfig(**(TINY_AUTOENCODER | overrides))


def tiny_diffusers_kl(seed: int = 0):
    """A diffusers AutoencoderKL of the tiny shape, in eval mode: a teacher, a pretrained model to start from."""
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    levels = len(TINY_AUTOENCODER["block_out_channels"])
    blocks = dict(down_block_types=("DownEncoderBlock2D",) * levels, up_block_types=("UpDecoderBlock2D",) * levels)
    return AutoencoderKL(**blocks, **(TINY_AUTOENCODER | {"block_out_channels": tuple(TINY_AUTOENCODER["block_out_channels"])})).eval()


def tiny_module(
    *,
    loss: dict | None = None,
    training: dict | None = None,
    ema: dict | None = None,
    autoencoder: dict | None = None,
    optimizer: OptimizerConfig | None = None,
    discriminator_optimizer: OptimizerConfig | None = None,
    speed: dict | None = None,
    discriminator: dict | None = None,
    validation: dict | None = None,
    inception: torch.nn.Module | None = None,
) -> AutoencoderModule:
    torch.manual_seed(0)
    return AutoencoderModule(
        autoencoder=tiny_autoencoder_config(**(autoencoder or {})),
        discriminator=DiscriminatorConfig(**(_TINY_PATCHGAN if (discriminator or {}).get("kind") != "vgg16" else {}) | (discriminator or {})),
        loss=LossConfig(**({"perceptual_network": "alex", "perceptual_backbone": "random", "disc_start_step": 1} | (loss or {}))),
        optimizer=GanOptimizers(
            generator=optimizer or OptimizerConfig(lr=1e-3), discriminator=discriminator_optimizer or optimizer or OptimizerConfig(lr=1e-3)
        ),
        ema=EMAConfig(**({"decay": 0.9} | (ema or {}))),
        training=TrainingConfig(**(training or {})),
        speed=SpeedConfig(**(speed or {})),
        validation=ValidationConfig(**(validation or {})),
        inception=inception,
    )


def tiny_trainer(root: Path | None = None, **overrides) -> L.Trainer:
    kwargs = dict(
        accelerator="cpu",
        devices=1,
        max_steps=3,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        default_root_dir=str(root) if root else None,
    )
    return L.Trainer(**(kwargs | overrides))


def fit_with_checkpoints(root: Path, module, datamodule, max_steps: int, *, ckpt_path: str | None = None, every: int = 2) -> L.Trainer:
    """Fits with a checkpoint every `every` generator steps and `last.ckpt` in `root`: the two halves of a
    resume test (stop at a step, then resume from `root/last.ckpt`)."""
    from lightning.pytorch.callbacks import ModelCheckpoint

    checkpoint = ModelCheckpoint(dirpath=root, save_last=True, every_n_train_steps=every)
    trainer = tiny_trainer(root, max_steps=max_steps, callbacks=[checkpoint], enable_checkpointing=True)
    trainer.fit(module, datamodule, ckpt_path=ckpt_path, weights_only=True)
    return trainer


def write_images(folder: Path, count: int, sizes: list[tuple[int, int]] | None = None, seed: int = 0) -> list[Path]:
    """Random RGB images of varied sizes and formats: a stand-in for a user's folder."""
    rng = np.random.default_rng(seed)
    sizes = sizes or [(40, 48), (64, 40), (36, 36), (80, 52)]
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        w, h = sizes[i % len(sizes)]
        # smooth images (upsampled noise) so a tiny autoencoder can learn them
        small = rng.integers(0, 256, size=(max(2, h // 8), max(2, w // 8), 3), dtype=np.uint8)
        image = Image.fromarray(small).resize((w, h), Image.BICUBIC)
        path = folder / (f"sub{i % 2}" if i % 3 else "") / f"img_{i:03d}.{'png' if i % 2 else 'jpg'}"
        path.parent.mkdir(parents=True, exist_ok=True)
        image.save(path)
        paths.append(path)
    return paths


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    write_images(tmp_path / "images", 12)
    return tmp_path / "images"


@pytest.fixture
def datamodule(image_folder: Path) -> SampleDataModule:
    return SampleDataModule(path=str(image_folder), resolution=32, batch_size=2, val_size=2, num_workers=0, seed=0)


TINY_WAN = {"family": "wan", "block_out_channels": [8, 16, 16], "latent_channels": 4, "norm_num_groups": 32}
"""A CPU-sized AutoencoderKLWan: 4x in time and space (1 + 4k frames -> 1 + k latent frames)."""
TINY_HUNYUAN = {"family": "hunyuan", "block_out_channels": [8, 16, 16], "latent_channels": 4, "norm_num_groups": 4}
"""A CPU-sized AutoencoderKLHunyuanVideo, with the same compression."""


def write_camera_videos_of_samples(folder: Path, count: int, frames: int = 9, size: int = 40) -> list[Path]:
    """mp4 clips of the bundled photos filmed by a moving camera (`fixtures.camera_clips`)."""
    from vaetrain.data import sample_images_dir

    from fixtures.camera_clips import write_camera_videos

    return write_camera_videos(sorted(sample_images_dir().glob("*.jpg"))[:count], folder, frames=frames, size=size)


@pytest.fixture
def video_folder(tmp_path: Path) -> Path:
    write_camera_videos_of_samples(tmp_path / "videos", 8)
    return tmp_path / "videos"


@pytest.fixture(scope="session")
def random_lpips():
    torch.manual_seed(0)
    return build_perceptual_loss("alex", "random")
