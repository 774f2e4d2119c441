"""What `recon` and `eval` show while they work: none of the deprecation notes or advice their dependencies
print (checked on the warnings and log records themselves, not on the console's text)."""

import logging
import warnings

from tests.conftest import TINY_AUTOENCODER, write_images
from vaetrain.cli import main
from vaetrain.models import AutoencoderConfig, build_autoencoder


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
