"""The diffusability probe: it tells easy latents from hard ones, and runs end to end from the command line."""

import json

import pytest
import torch

from tests.evaluation.test_evaluate import save_model
from vaetrain.cli import main
from vaetrain.evaluation.probe import ProbeConfig, hard_version, train_probe


def _smooth_latents(count: int = 256, seed: int = 0) -> torch.Tensor:
    """Latents with image-like structure: low-frequency fields, channels correlated."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.randn(count, 2, 2, 2, generator=generator)
    fields = torch.nn.functional.interpolate(coarse, size=(8, 8), mode="bilinear", align_corners=False)
    latents = torch.cat([fields, fields.flip(1) * 0.5 + 0.1 * torch.randn(count, 2, 8, 8, generator=generator)], dim=1)
    return (latents - latents.mean()) / latents.std()


@pytest.mark.slow  # 46 s here
def test_the_probe_separates_easy_latents_from_hard_ones():
    """The same information, once with spatial structure and once mixed by a fixed random orthogonal matrix
    over positions and channels plus high-frequency noise of the same variance: at the same budget the
    probe's validation loss is clearly higher for the hard one."""
    easy = _smooth_latents()
    config = ProbeConfig(steps=150, batch_size=32, samples=0, validation_triples=256)
    easy_loss = train_probe(easy, config).validation_loss
    hard_loss = train_probe(hard_version(easy), config).validation_loss
    assert abs(hard_version(easy).std().item() - easy.std().item()) < 0.2  # equal scale: not a trick of magnitude
    assert hard_loss > 1.2 * easy_loss, (easy_loss, hard_loss)


@pytest.mark.slow  # 190 s here (two models, probe + eval --probe)
def test_probe_and_eval_probe_from_the_command_line(tmp_path, image_folder):
    models = [save_model(tmp_path / "a", 0), save_model(tmp_path / "b", 1)]
    options = ["--data.path", str(image_folder), "--data.resolution", "32", "--probe-steps", "20", "--probe-samples", "4", "--backbones", "random"]
    assert main(["probe", *models, *options, "--out", str(tmp_path / "probe")]) == 0
    rows = json.loads((tmp_path / "probe" / "probe.json").read_text())
    assert [r["model"] for r in rows] == models
    assert all(r["probe_latent_shape"] == [4, 16, 16] and r["probe_validation_loss"] > 0 and r["probe_fid"] is not None for r in rows)
    assert (tmp_path / "probe" / rows[0]["probe_samples"]).is_file()

    assert main(["eval", *models, *options, "--metrics", "psnr", "--probe", "--out", str(tmp_path / "eval")]) == 0
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert all("probe_validation_loss" in row and "psnr" in row for row in metrics)
    assert "<h2>Diffusability</h2>" in (tmp_path / "eval" / "report.html").read_text()
