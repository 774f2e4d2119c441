"""`vaetrain eval` and `vaetrain recon` end to end on tiny random models and generated images."""

import csv
import json
from pathlib import Path

import pytest
import torch
from diffusers import AutoencoderKL
from PIL import Image

from tests.conftest import TINY_AUTOENCODER
from vaetrain.checkpoints.schema import autoencoder_from_checkpoint
from vaetrain.cli import main
from vaetrain.data import SampleSet, SourceSpec, evaluation_samples, pixels_of
from vaetrain.evaluation import measure_latent_statistics, reconstruct
from vaetrain.evaluation.evaluate import EvalOptions, evaluate
from vaetrain.evaluation.metric_networks import build_inception
from vaetrain.evaluation.results import RESULT_KEYS
from vaetrain.models import AutoencoderConfig, build_autoencoder

CHECKPOINT_V1 = Path(__file__).parents[1] / "fixtures" / "checkpoint_v1.ckpt"  # a tiny vaetrain checkpoint with an updated EMA


def save_model(path, seed: int) -> str:
    torch.manual_seed(seed)
    build_autoencoder(AutoencoderConfig(**TINY_AUTOENCODER)).save_pretrained(path)
    return str(path)


@pytest.fixture(scope="module")
def inception():
    return build_inception("random")


@pytest.fixture
def models(tmp_path):
    return [save_model(tmp_path / "model_a", 0), save_model(tmp_path / "model_b", 1)]


def eval_data(folder, resolution=32) -> SampleSet:
    return SampleSet(SourceSpec(path=str(folder)), resolution=resolution)


def test_eval_writes_every_metric_for_every_model(tmp_path, models, image_folder, random_lpips, inception):
    options = EvalOptions(batch_size=4)
    results = evaluate(models, eval_data(image_folder), options, tmp_path / "out", lpips=random_lpips, inception=inception)
    rows = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert [row["model"] for row in rows] == models
    for row in rows:
        assert set(RESULT_KEYS) <= set(row)
        assert row["images"] == 12 and len(row["latent_mean"]) == len(row["latent_std"]) == 4
        assert row["ms_ssim"] is None  # 32 px is below MS-SSIM's 161 px
        for key in ("psnr", "ssim", "lpips", "rfid", "kl", "encode_img_per_s", "fp16_max_abs_activation"):
            assert isinstance(row[key], float), key
        assert row["fp16_nonfinite"] is False
    with open(tmp_path / "out" / "metrics.csv") as handle:
        assert [r["model"] for r in csv.DictReader(handle)] == models
    assert (tmp_path / "out" / "report.html").stat().st_size > 1000
    assert rows[0]["psnr"] != rows[1]["psnr"]
    assert len(results[0].samples) == 4


def test_eval_figures_match_direct_computations(tmp_path, models, image_folder):
    data = eval_data(image_folder)
    [result] = evaluate(models[:1], data, EvalOptions(batch_size=4, metrics=("psnr",)), tmp_path / "out")
    model = AutoencoderKL.from_pretrained(models[0]).eval()
    images = torch.cat([pixels_of(b) for b in evaluation_samples(data, batch_size=4)])
    reconstruction = reconstruct(model, images).clamp(-1, 1)
    mse = (((reconstruction + 1) / 2 - (images + 1) / 2) ** 2).flatten(1).mean(1)
    assert result.values["psnr"] == pytest.approx(float((10 * torch.log10(1 / mse)).mean()), abs=1e-4)
    expected = measure_latent_statistics(model, [images[:4], images[4:8], images[8:]], sample=True, seed=0)
    assert result.values["latent_std"] == pytest.approx(expected.channel_std, abs=1e-6)
    assert result.values["scaling_factor"] == pytest.approx(1 / expected.std, rel=1e-6)
    assert result.values["kl"] == pytest.approx(expected.kl, rel=1e-6)
    assert result.values["lpips"] is None and result.values["rfid"] is None  # not asked for


def test_eval_loads_a_training_checkpoint_itself(tmp_path, image_folder):
    """A vaetrain `.ckpt` path is evaluated as given (no loader passed in): its EMA weights, or with
    `use_ema=False` its trained weights, exactly as the checkpoint schema reads them."""
    data = eval_data(image_folder)
    images = torch.cat([pixels_of(b) for b in evaluation_samples(data, batch_size=4)])
    psnr = {}
    for use_ema in (True, False):
        options = EvalOptions(batch_size=4, metrics=("psnr",), use_ema=use_ema)
        [result] = evaluate([str(CHECKPOINT_V1)], data, options, tmp_path / f"out-{use_ema}")
        model = autoencoder_from_checkpoint(CHECKPOINT_V1, use_ema=use_ema)[0]
        reconstruction = reconstruct(model, images).clamp(-1, 1)
        mse = (((reconstruction + 1) / 2 - (images + 1) / 2) ** 2).flatten(1).mean(1)
        assert result.values["psnr"] == pytest.approx(float((10 * torch.log10(1 / mse)).mean()), abs=1e-4)
        assert result.values["model"] == str(CHECKPOINT_V1) and result.values["images"] == 12
        psnr[use_ema] = result.values["psnr"]
    assert psnr[True] != psnr[False]  # the EMA copy and the trained weights differ in this checkpoint


def test_native_resolution_keeps_every_image_whole(tmp_path, models, image_folder):
    [result] = evaluate(models[:1], eval_data(image_folder, "native"), EvalOptions(metrics=("psnr", "ssim")), tmp_path / "out")
    sizes = {tuple(sample["original"].shape[1:]) for sample in result.samples}
    assert sizes == {(48, 40), (40, 64), (36, 36), (52, 80)}  # write_images' (w, h) sizes, uncropped
    assert result.samples[0]["reconstruction"].shape == result.samples[0]["original"].shape


def test_missing_pretrained_weights_cost_only_their_metric(tmp_path, models, image_folder, monkeypatch, capsys):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    import torch_fidelity.feature_extractor_inceptionv3 as inception_module
    import torchvision.models._api

    def offline(*args, **kwargs):
        raise OSError("no network")

    monkeypatch.setattr(torchvision.models._api, "load_state_dict_from_url", offline)
    monkeypatch.setattr(inception_module, "load_state_dict_from_url", offline)
    code = main(["eval", models[0], "--data.path", str(image_folder), "--data.resolution", "32", "--out", str(tmp_path / "out")])
    assert code == 1
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("vaetrain eval:")]
    assert any("alexnet-owt-7be5be79.pth" in line for line in errors)
    assert any("weights-inception-2015-12-05-6726825d.pth" in line and str(tmp_path / "torch") in line for line in errors)
    [row] = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert row["lpips"] is None and row["rfid"] is None
    assert isinstance(row["psnr"], float) and isinstance(row["ssim"], float)


def test_eval_command_rejects_unknown_metrics_and_bad_resolution(tmp_path, models, image_folder):
    assert main(["eval", models[0], "--data.path", str(image_folder), "--metrics", "psnr,fid"]) == 2
    assert main(["eval", models[0], "--data.path", str(image_folder), "--data.resolution", "31", "--metrics", "psnr"]) == 2  # factor 2


def test_recon_writes_pngs_at_the_input_size(tmp_path, models, image_folder):
    (image_folder / "broken.jpg").write_bytes(b"not an image")
    out = tmp_path / "recon"
    assert main(["recon", models[0], str(image_folder), "--out", str(out), "--side-by-side"]) == 0
    written = sorted(out.rglob("*.png"))
    assert len(written) == 12  # the broken file is skipped (and reported), not fatal
    source = Image.open(image_folder / "img_000.jpg")
    pair = Image.open(out / "img_000.png")
    assert pair.size == (2 * source.size[0] + 4, source.size[1])
    single = tmp_path / "single"
    assert main(["recon", models[0], str(image_folder / "img_000.jpg"), "--out", str(single)]) == 0
    assert Image.open(single / "img_000.png").size == source.size
