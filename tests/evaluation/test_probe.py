"""The diffusability probe: it tells easy latents from hard ones, and runs end to end from the command line."""

import json
import math

import pytest
import torch

from tests.evaluation.test_evaluate import save_model
from vaetrain.cli import main
from vaetrain.evaluation.diffusability_probe import ProbeConfig, train_probe


def _smooth_latents(count: int = 256, seed: int = 0) -> torch.Tensor:
    """Latents with image-like structure: low-frequency fields, channels correlated."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.randn(count, 2, 2, 2, generator=generator)
    fields = torch.nn.functional.interpolate(coarse, size=(8, 8), mode="bilinear", align_corners=False)
    latents = torch.cat([fields, fields.flip(1) * 0.5 + 0.1 * torch.randn(count, 2, 8, 8, generator=generator)], dim=1)
    return (latents - latents.mean()) / latents.std()


def hard_version(latents: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """The same information made hard to model: a fixed random orthogonal mixing of all positions and
    channels, plus high-frequency noise (a checkerboard of random signs) of the latents' own variance."""
    generator = torch.Generator().manual_seed(seed)
    dims = math.prod(latents.shape[1:])
    mixing, _ = torch.linalg.qr(torch.randn(dims, dims, generator=generator))
    mixed = (latents.flatten(1) @ mixing.to(latents)).view_as(latents)
    signs = torch.randint(0, 2, latents.shape[1:], generator=generator).to(latents) * 2 - 1
    return (mixed + latents.std() * signs * torch.randn(latents.shape, generator=generator).to(latents).abs()) / math.sqrt(2)


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


def test_every_vae_is_standardised_alike_whatever_its_config_says(image_folder):
    """Two copies of one VAE, one exported with per-channel fields and one with a global scale (or a third
    party's arbitrary scaling_factor), give the probe the same latents: statistics of the probe's own images,
    per channel, not the config's fields."""
    from diffusers import AutoencoderKL

    from tests.conftest import tiny_autoencoder_config
    from vaetrain.data import SampleSet, SourceSpec
    from vaetrain.evaluation.diffusability import encode
    from vaetrain.models import build_autoencoder

    torch.manual_seed(0)
    first = build_autoencoder(tiny_autoencoder_config()).eval()
    second = AutoencoderKL.from_config(first.config)
    second.load_state_dict(first.state_dict())
    first.register_to_config(scaling_factor=0.18215, shift_factor=None)
    second.register_to_config(scaling_factor=1.0, latents_mean=[5.0, -5.0, 1.0, 0.0], latents_std=[0.1, 3.0, 1.0, 7.0])
    images = SampleSet(SourceSpec(path=str(image_folder)), resolution=32)
    a, originals, _ = encode(first, images, None, torch.device("cpu"), seed=0)
    b, _, _ = encode(second.eval(), images, None, torch.device("cpu"), seed=0)
    torch.testing.assert_close(a, b)
    per_channel = a.transpose(0, 1).flatten(1)
    torch.testing.assert_close(per_channel.mean(dim=1), torch.zeros(4), atol=1e-5, rtol=0)
    torch.testing.assert_close(per_channel.std(dim=1, correction=0), torch.ones(4), atol=1e-5, rtol=0)
    assert len(a) == len(originals) == 12
