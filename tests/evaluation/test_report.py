"""report.html as a person sees it: rendered by headless Chromium, checked on the screenshot's pixels."""

import shutil
import subprocess

import numpy as np
import pytest
import torch
from PIL import Image

from tests.conftest import TINY_AUTOENCODER
from vaetrain.data import SampleSet, SourceSpec
from vaetrain.evaluation.evaluate import EvalOptions, evaluate
from vaetrain.evaluation.metric_networks import build_inception
from vaetrain.evaluation.report import read_scalars
from vaetrain.models import AutoencoderConfig, build_autoencoder

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
TABLE_HEADER_RGB = (0x1F, 0x4E, 0x79)  # report.STYLE: table.metrics th background


def screenshot(page, out, size=(1400, 1800)) -> np.ndarray:
    subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            f"--user-data-dir={out.parent / 'chromium-profile'}",
            "--force-device-scale-factor=1",
            f"--window-size={size[0]},{size[1]}",
            f"--screenshot={out}",
            page.as_uri(),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    return np.asarray(Image.open(out).convert("RGB")).astype(np.int16)


def find(template: np.ndarray, picture: np.ndarray, tolerance: float = 3.0) -> bool:
    """Whether `template` appears in `picture` pixel for pixel (mean abs difference under `tolerance`)."""
    h, w = template.shape[:2]
    corner = template[0, 0]
    ys, xs = np.nonzero(np.abs(picture - corner).max(axis=2) <= 2)
    for y, x in zip(ys[:50000], xs[:50000]):
        patch = picture[y : y + h, x : x + w]
        if patch.shape == template.shape and np.abs(patch - template).mean() < tolerance:
            return True
    return False


@pytest.mark.slow  # 10 s: Chromium renders the report; the report's content is tested in the default suite
@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (make test installs it)")
def test_report_shows_the_table_and_the_images_in_chromium(tmp_path, image_folder, random_lpips):
    torch.manual_seed(0)
    build_autoencoder(AutoencoderConfig(**TINY_AUTOENCODER)).save_pretrained(tmp_path / "model")
    data = SampleSet(SourceSpec(path=str(image_folder)), resolution=32)
    [result] = evaluate([str(tmp_path / "model")], data, EvalOptions(batch_size=4), tmp_path / "out", lpips=random_lpips, inception=build_inception("random"))
    pixels = screenshot(tmp_path / "out" / "report.html", tmp_path / "shot.png")

    header = np.all(pixels == np.array(TABLE_HEADER_RGB), axis=2)
    assert header.sum() > 3000, "the metrics table's header row is not on screen"
    rows, cols = np.nonzero(header)
    assert cols.max() - cols.min() > 600  # a table spanning many columns, not a stray box

    for sample in result.samples[:2]:  # originals and reconstructions appear pixel for pixel
        for key in ("original", "reconstruction"):
            template = sample[key].permute(1, 2, 0).numpy().astype(np.int16)
            assert find(template, pixels), f"{key} image not found in the screenshot"
    # and an image that is not in the report is not found (the search can fail)
    assert not find(np.full((32, 32, 3), (200, 30, 160), dtype=np.int16), pixels)


def test_report_plots_the_curves_of_a_training_run(tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(tmp_path / "run" / "lightning_logs" / "version_0")
    for step in range(0, 50, 10):
        writer.add_scalar("val/psnr", 10 + step / 10, step)
        writer.add_scalar("train/total", 1 - step / 100, step)
    writer.close()
    scalars = read_scalars(tmp_path / "run")
    assert scalars["val/psnr"] == [(s, pytest.approx(10 + s / 10)) for s in range(0, 50, 10)]
    from vaetrain.evaluation.report import _training_curves

    page = _training_curves(tmp_path / "run")
    assert page.count("<polyline") == 2


def test_the_report_shows_the_channels_the_grids_show():
    """One display rule (`display_triplet`): the report's first view of a sample is the triplet the training
    grids show, for every channel count (2 channels used to be shown as channels 0, 1, 2 here)."""
    from vaetrain.data.decoding.pixels import PixelFormat
    from vaetrain.evaluation.report_samples import _views

    for channels, display in ((1, None), (2, None), (3, None), (4, None), (6, (3, 2, 1))):
        pixels = PixelFormat(channels=channels, display=display)
        values = {"display_channels": list(display) if display else None}
        assert _views(values, channels)[0][1] == pixels.display_channels(), channels
