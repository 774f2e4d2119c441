"""A 6-band 16-bit TIFF collection trains, resumes exactly (percentile bounds included), exports a diffusers
folder with 6 input channels and its pixel format, and reloads with identical outputs; eval reads it alike."""

import json
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import tifffile
import torch
from diffusers import AutoencoderKL
from lightning.pytorch.callbacks import ModelCheckpoint

from tests.conftest import tiny_module, tiny_trainer
from vaetrain.checkpoints.references import recorded_pixel_format
from vaetrain.data import SampleDataModule
from vaetrain.data.decoding.pixels import PIXEL_FORMAT_FILE, PixelFormat
from vaetrain.errors import ConfigError
from vaetrain.export.diffusers_folder import export_checkpoint

from fixtures.synthetic import write_multiband_tiffs

SIX_BANDS = {"autoencoder": {"in_channels": 6, "out_channels": 6}, "loss": {"perceptual_channels": [[0, 1, 2], [3, 4, 5]], "disc_start_step": 1}}


@pytest.fixture(scope="module")
def tiles(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("tiles")
    write_multiband_tiffs(folder, 10, bands=6, size=40)
    return folder


def _data(folder: Path) -> SampleDataModule:
    return SampleDataModule(
        path=str(folder), channels=6, bit_depth=16, normalization="percentile", resolution=32, batch_size=2, val_size=2, num_workers=0, seed=0
    )


def _run(root: Path, folder: Path, max_steps: int, ckpt_path: str | None = None):
    L.seed_everything(0)
    module = tiny_module(**SIX_BANDS)
    checkpoint = ModelCheckpoint(dirpath=root, save_last=True, every_n_train_steps=2)
    data = _data(folder)
    trainer = tiny_trainer(root, max_steps=max_steps, callbacks=[checkpoint], enable_checkpointing=True)
    trainer.fit(module, data, ckpt_path=ckpt_path, weights_only=True)
    return module, data


def test_six_band_tiffs_train_resume_export_and_reload_identically(tmp_path, tiles):
    straight, data = _run(tmp_path / "straight", tiles, max_steps=4)
    _run(tmp_path / "resumed", tiles, max_steps=2)
    resumed, resumed_data = _run(tmp_path / "resumed", tiles, max_steps=4, ckpt_path=str(tmp_path / "resumed" / "last.ckpt"))
    assert straight.counters == resumed.counters and straight.counters.discriminator_steps == 3
    for key, value in straight.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[key]), key
    assert data.pixels.low is not None and resumed_data.pixels == data.pixels
    assert data.pixels.low[0] > 0 and data.pixels.high[0] < 65535  # measured, not the full 16-bit range
    elsewhere = SampleDataModule(path=str(tiles), channels=6, bit_depth=16, normalization="percentile", percentiles=(0, 100))
    elsewhere.prepare_split()
    assert elsewhere.pixels != data.pixels
    elsewhere.load_state_dict(data.state_dict())  # a resumed run normalises with the bounds it started with
    assert elsewhere.pixels == data.pixels

    out = export_checkpoint(tmp_path / "resumed" / "last.ckpt", tmp_path / "export", max_images=4)
    assert json.loads((out / PIXEL_FORMAT_FILE).read_text())["high"] == list(data.pixels.high)
    assert "6 channels, 16-bit; each channel's 0.5-99.5 percentiles" in (out / "README.md").read_text()
    assert recorded_pixel_format(out) == data.pixels == recorded_pixel_format(tmp_path / "resumed" / "last.ckpt")
    reloaded = AutoencoderKL.from_pretrained(out).eval()
    assert reloaded.config.in_channels == 6 and reloaded.config.out_channels == 6
    images = next(iter(data.val_dataloader()))["pixels"]
    assert images.shape == (2, 6, 32, 32)
    with torch.no_grad():
        expected = resumed.eval()(images)
        actual = reloaded.decode(reloaded.encode(images).latent_dist.mode()).sample
    assert torch.equal(expected, actual)


def test_data_channels_must_match_the_autoencoder_in_one_line(tiles):
    module = tiny_module(loss={"perceptual_weight": 0.0})
    with pytest.raises(ConfigError, match="data.channels=6, but the autoencoder reads 3"):
        module.check_data(_data(tiles))


def test_the_discriminator_follows_the_autoencoder_and_vgg16_refuses_other_channels():
    module = tiny_module(autoencoder={"in_channels": 1, "out_channels": 1})  # 1 channel: LPIPS replicates it
    assert module.discriminator(torch.zeros(1, 1, 32, 32)).shape[1] == 1
    assert module.perceptual(torch.zeros(2, 1, 32, 32), torch.ones(2, 1, 32, 32)).shape == (2,)
    with pytest.raises(ConfigError, match="vgg16 reads RGB"):
        tiny_module(
            autoencoder={"in_channels": 4, "out_channels": 4}, loss={"perceptual_weight": 0.0}, discriminator={"kind": "vgg16", "vgg_backbone": "random"}
        )


def test_eval_of_the_export_reads_the_images_as_training_did(tmp_path, tiles):
    from vaetrain.cli import main

    _run(tmp_path / "run", tiles, max_steps=2)
    export_checkpoint(tmp_path / "run" / "last.ckpt", tmp_path / "export", max_images=4)
    code = main(
        [
            "eval",
            str(tmp_path / "export"),
            "--data.path",
            str(tiles),
            "--data.resolution",
            "32",
            "--metrics",
            "psnr,ssim,lpips",
            "--backbones",
            "random",
            "--out",
            str(tmp_path / "eval"),
            "--samples",
            "1",
        ]
    )
    assert code == 0
    (row,) = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert row["channels"] == 6 and row["bit_depth"] == 16 and len(row["psnr_channels"]) == 6 and row["lpips_channels"] == "each"
    assert row["images"] == 10 and row["bad_files"] == 0
    html = (tmp_path / "eval" / "report.html").read_text()
    assert html.count("channel 5") == 1 and "channels [0, 1, 2] as RGB" in html
    assert PixelFormat.from_dict(json.loads((tmp_path / "export" / PIXEL_FORMAT_FILE).read_text())).channels == 6

    assert main(["recon", str(tmp_path / "export"), str(tiles / "tile_000.tif"), "--out", str(tmp_path / "recon"), "--side-by-side"]) == 0
    written = tifffile.imread(tmp_path / "recon" / "tile_000.tif")  # the reconstruction in the data's own units
    assert written.dtype == np.uint16 and written.shape == (6, 40, 40)
    pixels = recorded_pixel_format(tmp_path / "export")
    assert written.min() >= round(min(pixels.low)) and written.max() <= round(max(pixels.high))
    assert (tmp_path / "recon" / "tile_000.png").is_file()  # input | reconstruction in the display channels


def test_rgb_only_terms_refuse_other_channel_counts_in_one_line():
    from tests.conftest import tiny_autoencoder_config
    from vaetrain.losses.alignment import AlignmentConfig
    from vaetrain.models.autoencoder import build_autoencoder
    from vaetrain.training.features.distillation import check_student

    with pytest.raises(ConfigError, match="alignment: its vision encoder reads RGB"):
        tiny_module(
            autoencoder={"in_channels": 4, "out_channels": 4}, loss={"perceptual_weight": 0.0, "alignment": AlignmentConfig(weight=0.1, encoder="random-small")}
        )
    student, teacher = (build_autoencoder(tiny_autoencoder_config(in_channels=c, out_channels=c)) for c in (6, 3))
    with pytest.raises(ConfigError, match="teacher has in_channels 3, the student"):
        check_student(student, teacher)
