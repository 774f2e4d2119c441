"""The ImageNet protocol: ADM's centre crop by hand, and `vaetrain eval --protocol imagenet-256` end to end
(random Inception and LPIPS: plumbing only), with the originals' Inception statistics cached and reused."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from tests.conftest import TINY_AUTOENCODER
from vaetrain.cli import main
from vaetrain.data import SampleSet, SourceSpec, evaluation_samples, pixels_of
from vaetrain.data.decoding.transforms import ADMCenterCrop
from vaetrain.models import AutoencoderConfig, build_autoencoder


def adm_by_hand(image: Image.Image, size: int) -> np.ndarray:
    """guided-diffusion's `center_crop_arr`, step by step."""
    while min(*image.size) >= 2 * size:
        image = image.resize(tuple(x // 2 for x in image.size), resample=Image.BOX)
    scale = size / min(*image.size)
    image = image.resize(tuple(round(x * scale) for x in image.size), resample=Image.BICUBIC)
    array = np.array(image)
    top, left = (array.shape[0] - size) // 2, (array.shape[1] - size) // 2
    return array[top : top + size, left : left + size]


@pytest.mark.parametrize("size", [(1000, 653), (301, 517), (40, 90)])  # two halvings; one; an upscale
def test_adm_centre_crop_equals_guided_diffusions(size):
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))
    cropped = np.array(ADMCenterCrop(64)(image))
    assert cropped.shape == (64, 64, 3) and np.array_equal(cropped, adm_by_hand(image, 64))


def test_evaluation_samples_cut_by_the_protocol(image_folder):
    images = SampleSet(SourceSpec(path=str(image_folder)), resolution=32, eval_crop="adm")
    batch = pixels_of(next(iter(evaluation_samples(images, batch_size=12, num_workers=0))))
    first = sorted(p for p in image_folder.rglob("*") if p.is_file())[0]
    expected = torch.from_numpy(adm_by_hand(Image.open(first).convert("RGB"), 32)).permute(2, 0, 1).float() / 127.5 - 1
    assert any(torch.allclose(image, expected, atol=1e-6) for image in batch)


@pytest.mark.slow  # 38 s (two evaluations through Inception); the protocol's crop and reference are tested above
def test_eval_with_the_imagenet_protocol_caches_and_reuses_the_reference(tmp_path, image_folder, capsys):
    torch.manual_seed(0)  # no mid-block attention: at 256 px the tiny f2 model would attend over 16,384 positions
    build_autoencoder(AutoencoderConfig(**(TINY_AUTOENCODER | {"mid_block_add_attention": False}))).save_pretrained(tmp_path / "vae")
    model = str(tmp_path / "vae")
    common = [
        model,
        "--data.path",
        str(image_folder),
        "--protocol",
        "imagenet-256",
        "--backbones",
        "random",
        "--data.num_workers",
        "0",
        "--data.max_images",
        "4",
    ]
    assert main(["eval", *common, "--out", str(tmp_path / "one")]) == 0
    (row,) = json.loads((tmp_path / "one" / "metrics.json").read_text())
    assert row["resolution"] == 256 and row["protocol"].startswith("ImageNet-1k validation") and row["ms_ssim"] is None
    assert all(row[k] is not None for k in ("psnr", "ssim", "lpips", "rfid"))
    reference = tmp_path / "one" / "imagenet-256-inception.pt"
    assert int(torch.load(reference, weights_only=True)["real_features_num_samples"]) == row["images"] == 4
    assert main(["eval", *common, "--fid-reference", str(reference), "--out", str(tmp_path / "two")]) == 0
    (again,) = json.loads((tmp_path / "two" / "metrics.json").read_text())
    assert again["rfid"] == pytest.approx(row["rfid"], rel=1e-6) and not (tmp_path / "two" / "imagenet-256-inception.pt").exists()
    assert main(["eval", *common, "--data.resolution", "128", "--out", str(tmp_path / "bad")]) == 2
    assert "--protocol imagenet-256 fixes the crop" in capsys.readouterr().err
