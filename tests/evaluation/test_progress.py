"""What `recon` and `eval` show while they work: a progress bar per file and per video chunk with the
right totals, and none of the deprecation notes or advice their dependencies print (checked on the warnings
and log records themselves, not on the console's text)."""

import logging
import warnings

import pytest

from tests.conftest import TINY_AUTOENCODER, TINY_HUNYUAN, TINY_WAN, write_camera_videos_of_samples, write_images
from vaetrain.checkpoints import load_autoencoder
from vaetrain.cli import main
from vaetrain.evaluation.recon import reconstruct_files
from vaetrain.evaluation.reconstruct import TilingConfig
from vaetrain.models import AutoencoderConfig, build_autoencoder


class Recorder:
    """A `Progress`: every bar it opened, with its total, what it was advanced by, and whether it was closed."""

    def __init__(self):
        self.bars = []

    def __call__(self, total, label, unit):
        bar = {"total": total, "unit": unit, "done": 0, "closed": False}
        self.bars.append(bar)
        recorder_bar = type("Bar", (), {"update": lambda _, n=1: bar.update(done=bar["done"] + n), "close": lambda _: bar.update(closed=True)})
        return recorder_bar()


@pytest.mark.parametrize(
    ("family", "frames", "size", "tiling"),
    [(TINY_WAN, 6, 24, TilingConfig(tile_size=16)), (TINY_WAN, 6, 24, TilingConfig(enabled=False)), (TINY_HUNYUAN, 17, 16, None)],
    ids=["wan-tiled", "wan-whole", "hunyuan-temporal-tiles"],
)
def test_recon_counts_every_video_and_every_chunk_of_each(tmp_path, family, frames, size, tiling):
    """One bar over the files (2 videos) and one per video over diffusers' encoder and decoder calls, whose
    total is exactly the number of calls made (chunks of 4 frames, tiles, HunyuanVideo's 16-frame windows)."""
    videos = tmp_path / "videos"
    write_camera_videos_of_samples(videos, 2, frames=frames, size=size)
    build_autoencoder(AutoencoderConfig(**family)).save_pretrained(tmp_path / "model")
    model = load_autoencoder(tmp_path / "model")  # as `recon` loads it: diffusers' own tiling (training switches HunyuanVideo's off)
    recorder = Recorder()
    written, bad = reconstruct_files(model, [str(videos)], tmp_path / "out", tiling=tiling, device="cpu", progress=recorder)
    assert written == 2 and not bad
    files, *chunks = recorder.bars
    assert files == {"total": 2, "unit": "video", "done": 2, "closed": True}
    assert len(chunks) == 2 and all(bar["unit"] == "chunk" and bar["closed"] for bar in chunks)
    assert all(bar["total"] == bar["done"] for bar in chunks), chunks
    assert chunks[0]["total"] > 2  # chunked: more than one encoder and one decoder call


def test_recon_counts_images_bad_ones_included(tmp_path):
    write_images(tmp_path / "images", 3)
    (tmp_path / "images" / "broken.jpg").write_bytes(b"not an image")
    model = build_autoencoder(AutoencoderConfig(**TINY_AUTOENCODER)).eval()
    recorder = Recorder()
    assert reconstruct_files(model, [str(tmp_path / "images")], tmp_path / "out", device="cpu", progress=recorder)[0] == 3
    assert recorder.bars == [{"total": 4, "unit": "image", "done": 4, "closed": True}]


def test_eval_and_recon_emit_no_dependency_deprecations_or_advice(tmp_path):
    """torchvision's `pretrained` deprecations (made by `lpips`) and diffusers' warnings while loading (its
    `accelerate` advice among them) do not reach a user of these commands; vaetrain's own warnings would.
    `probe` installs the same filters (`vaetrain.cli.main`); its one-step run costs ~30 s here, so it is left out."""
    model = tmp_path / "model"
    build_autoencoder(AutoencoderConfig(**TINY_AUTOENCODER)).save_pretrained(model)
    write_images(tmp_path / "images", 4)
    images = ["--data.path", str(tmp_path / "images"), "--data.resolution", "32", "--data.num_workers", "0"]
    records = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = records.append
    logging.getLogger("diffusers").addHandler(handler)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            assert main(["eval", str(model), *images, "--metrics", "psnr,lpips", "--backbones", "random", "--out", str(tmp_path / "eval")]) == 0
            assert main(["recon", str(model), str(tmp_path / "images"), "--out", str(tmp_path / "recon")]) == 0
    finally:
        logging.getLogger("diffusers").removeHandler(handler)
    assert [(w.category.__name__, w.filename) for w in caught if "torchvision" in w.filename or "diffusers" in w.filename] == []
    assert [(r.name, r.levelname) for r in records] == []
