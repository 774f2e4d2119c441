"""The token probe: it tells structured token sets from random ones, and runs from `vaetrain probe --tokens`
on a discrete model (continuous models get no token figures)."""

import json
import math

import torch

from tests.conftest import TINY_AUTOENCODER
from tests.evaluation.test_evaluate import save_model
from vaetrain.cli import main
from vaetrain.evaluation.token_probe import TokenProbeConfig, train_token_probe
from vaetrain.models import AutoencoderConfig, build_autoencoder
from vaetrain.models.quantizer import QuantizerConfig


def test_the_token_probe_separates_learnable_tokens_from_random_ones():
    generator = torch.Generator().manual_seed(0)
    codes, length = 32, 16
    first = torch.randint(codes, (256, 1), generator=generator)
    structured = (first + torch.arange(length)) % codes  # each token follows from the one before
    random = torch.randint(codes, (256, length), generator=generator)
    config = TokenProbeConfig(steps=150, batch_size=32, layers=2, width=64)
    easy, hard = train_token_probe(structured, codes, config), train_token_probe(random, codes, config)
    assert easy.nll_per_token < 0.5 * hard.nll_per_token, (easy.nll_per_token, hard.nll_per_token)
    assert abs(hard.nll_per_token - math.log(codes)) < 0.3  # uniform tokens cost log(codes) nats each
    assert hard.bits_per_image == hard.nll_per_token / math.log(2) * length


def test_probe_tokens_from_the_command_line(tmp_path, image_folder):
    torch.manual_seed(0)
    vq = AutoencoderConfig(**(TINY_AUTOENCODER | {"family": "vq", "quantizer": QuantizerConfig(codebook_size=16)}))
    build_autoencoder(vq).save_pretrained(tmp_path / "vq")
    models = [str(tmp_path / "vq"), save_model(tmp_path / "kl", 0)]
    options = ["--data.path", str(image_folder), "--data.resolution", "16", "--data.num_workers", "0", "--probe-steps", "1", "--probe-samples", "0"]
    assert main(["probe", *models, *options, "--tokens", "--token-steps", "4", "--backbones", "random", "--out", str(tmp_path / "probe")]) == 0
    discrete, continuous = json.loads((tmp_path / "probe" / "probe.json").read_text())
    assert discrete["tokens_per_image"] == 8 * 8 and math.isfinite(discrete["token_nll"]) and discrete["token_bits_per_image"] > 0
    assert continuous["token_nll"] is None
