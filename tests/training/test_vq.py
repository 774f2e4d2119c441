"""The vq family: LDM's VQ-regularised models, FSQ, codebooks kept alive, and diffusers' VQModel decoding
exactly what training decoded."""

import json
from pathlib import Path

import pytest
import torch
from diffusers import VQModel

from tests.conftest import fit_with_checkpoints, tiny_module
from vaetrain.data import SampleDataModule
from vaetrain.errors import ConfigError
from vaetrain.export.diffusers_folder import export_model
from vaetrain.export.model_card import CardFacts
from vaetrain.models import AutoencoderConfig
from vaetrain.models.autoencoder import autoencoder_from_state
from vaetrain.models.families import decode, encode, family_of
from vaetrain.models.quantizer import FSQ_MAX_CODES, Codebook, QuantizerConfig, TokenUsage, fsq_grid, fsq_indices, lookup, vq_loss

QUANTIZERS = {
    "vq": QuantizerConfig(codebook_size=32),
    "vq_alive": QuantizerConfig(codebook_size=32, ema_decay=0.9, kmeans_init=True, restart_threshold=1.0),
    "fsq": QuantizerConfig(kind="fsq", levels=[3, 3, 2, 2]),
}


def _module(quantizer: QuantizerConfig, **loss):
    return tiny_module(autoencoder={"family": "vq", "quantizer": quantizer}, loss={"disc_start_step": 1} | loss)


def _data(folder: Path) -> SampleDataModule:
    return SampleDataModule(path=str(folder), resolution=32, batch_size=2, val_size=2, num_workers=0, seed=0)


def _run(root: Path, folder: Path, quantizer: QuantizerConfig, max_steps: int, ckpt_path: str | None = None):
    module = _module(quantizer)
    fit_with_checkpoints(root, module, _data(folder), max_steps, ckpt_path=ckpt_path)
    return module


@pytest.mark.parametrize("name", sorted(QUANTIZERS))
def test_vq_trains_resumes_exactly_and_reloads_in_diffusers_decoding_what_training_decoded(tmp_path, image_folder, name):
    quantizer = QUANTIZERS[name]
    straight = _run(tmp_path / "straight", image_folder, quantizer, 4)
    _run(tmp_path / "resumed", image_folder, quantizer, 2)
    resumed = _run(tmp_path / "resumed", image_folder, quantizer, 4, ckpt_path=str(tmp_path / "resumed" / "last.ckpt"))
    for key, value in straight.state_dict().items():  # weights, EMA, the codebook's statistics
        assert torch.equal(value, resumed.state_dict()[key]), key
    assert int(straight.codebook.commits) == 4 and all(torch.isfinite(v).all() for v in straight.state_dict().values() if v.is_floating_point())

    model = autoencoder_from_state(dict(straight.autoencoder.config), straight.full_inference_state_dict())
    folder = export_model(model, tmp_path / "export", _data(image_folder).describe(), facts=CardFacts(settings={"autoencoder": {}, "loss": {}}))
    reloaded = VQModel.from_pretrained(folder).eval()
    images = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        latents = encode(model, images).mean
        levels = quantizer.levels if quantizer.kind == "fsq" else None
        trained = family_of(model).decode_quantized(model, lookup(family_of(model).codebook(model), latents, levels).latents)
        assert torch.equal(reloaded.decode(reloaded.encode(images).latents).sample, trained)
        assert torch.equal(decode(reloaded, encode(reloaded, images).mean), trained)
    statistics = json.loads((folder / "latent_statistics.json").read_text())  # measured on the pre-quantisation latents
    assert reloaded.config.scaling_factor == pytest.approx(statistics["scaling_factor"]) != 0.18215 and len(statistics["channel_mean"]) == 4


def test_fsq_rounding_is_the_nearest_row_of_the_written_out_grid():
    levels = [5, 4, 3]
    grid = fsq_grid(levels)
    assert grid.shape == (60, 3) and grid.min() == -1 and grid.max() == 1
    points = torch.randn(500, 3) * 1.5  # inside and outside [-1, 1]
    assert torch.equal(fsq_indices(points, levels), torch.argmin(torch.cdist(points, grid), dim=1))
    with pytest.raises(ConfigError, match=f"over the {FSQ_MAX_CODES} an exported VQModel's codebook"):
        QuantizerConfig(kind="fsq", levels=[8, 8, 8, 8, 8, 8])


def test_vq_loss_is_taming_vectorquantizer2():
    """taming/modules/vqvae/quantize.py, VectorQuantizer2.forward, both `legacy` forms, by hand."""
    z, codes = torch.tensor([[1.0, 2.0]]), torch.tensor([[0.0, 4.0]])
    squared = (1.0 + 4.0) / 2
    assert vq_loss(z, codes, 0.25, legacy=False).item() == pytest.approx(0.25 * squared + squared)
    assert vq_loss(z, codes, 0.25, legacy=True).item() == pytest.approx(squared + 0.25 * squared)
    assert vq_loss(z, codes, 0.25, legacy=True, codebook_trained=False).item() == pytest.approx(0.25 * squared)


def test_codebook_usage_equals_a_hand_count():
    usage = TokenUsage(8)
    usage.update(torch.tensor([[0, 0, 1, 1], [0, 0, 2, 2]]))  # codes 0: 4, 1: 2, 2: 2 of 8 tokens
    values = usage.compute()
    entropy = -(0.5 * torch.log(torch.tensor(0.5)) + 2 * 0.25 * torch.log(torch.tensor(0.25))).item()
    assert values["codebook_usage"] == 3 / 8 and values["dead_codes"] == 5
    assert values["codebook_perplexity"] == pytest.approx(torch.exp(torch.tensor(entropy)).item())
    assert values["bits_per_image"] == pytest.approx(4 * 3)


def test_dead_code_restarts_revive_a_collapsed_codebook():
    """Every encoder output sits at code 0, the other codes far away: restarts move the dead codes onto
    recent encoder outputs, and the next lookup uses many codes."""
    torch.manual_seed(0)
    weight = torch.full((16, 4), 50.0)
    weight[0] = 0.0
    samples = torch.randn(256, 4)
    codebook = Codebook(QuantizerConfig(codebook_size=16, restart_threshold=1.0), dim=4)
    before = lookup(weight, samples.T.reshape(1, 4, 16, 16)).indices
    assert before.unique().tolist() == [0]
    codebook.observe(samples, before)
    codebook.commit(weight)
    after = lookup(weight, samples.T.reshape(1, 4, 16, 16)).indices
    assert len(after.unique()) > 8 and int((weight == 50.0).all(dim=1).sum()) == 0


def _rosinality_ema(cluster_size, embed_avg, flat, indices, decay, eps=1e-5):
    """rosinality/vq-vae-2-pytorch, vqvae.py, `Quantize.forward`'s training branch, written out (its
    (dim, codes) layout transposed): one-hot assignment, EMA of the counts and of the sums, Laplace smoothing
    of the counts, codebook = EMA sums / smoothed counts."""
    onehot = torch.nn.functional.one_hot(indices, len(cluster_size)).float()
    cluster_size = cluster_size * decay + onehot.sum(0) * (1 - decay)
    embed_avg = embed_avg * decay + (flat.T @ onehot).T * (1 - decay)
    n = cluster_size.sum()
    smoothed = (cluster_size + eps) / (n + len(cluster_size) * eps) * n
    return embed_avg / smoothed[:, None]


def test_the_ema_codebook_update_is_vq_vae_2s_and_the_same_at_accumulation_1_and_2():
    """rosinality's `Quantize.forward` by hand from the state the codebook updates from: the first update
    from the start (each code counted once at itself: Jukebox's `init_k`, k_sum = k and k_elem = 1; not
    rosinality's zero counts, under which a code's first update is about decay / ((1 - decay) x its count) x
    itself, throwing a k-means codebook outwards), then one from arbitrary statistics. Two micro-batches
    committed together equal one batch; a skipped window changes nothing."""
    torch.manual_seed(0)
    config = QuantizerConfig(codebook_size=4, ema_decay=0.75)  # not 0.5: decay and 1 - decay swapped would pass
    flat, indices = torch.randn(6, 2), torch.tensor([0, 0, 1, 1, 1, 3])
    start = torch.randn(4, 2)
    one, two = start.clone(), start.clone()
    whole, halves = Codebook(config, 2), Codebook(config, 2)
    whole.observe(flat, indices)
    whole.commit(one)
    halves.observe(flat[:3], indices[:3])
    halves.observe(flat[3:], indices[3:])
    halves.commit(two)
    assert torch.allclose(one, two)
    torch.testing.assert_close(one, _rosinality_ema(torch.ones(4), start, flat, indices, 0.75), rtol=1e-6, atol=1e-6)

    cluster_size, embed_avg = torch.tensor([3.0, 0.5, 0.0, 2.0]), torch.randn(4, 2)  # any statistics, set alike
    whole.cluster_size.copy_(cluster_size)
    whole.embed_avg.copy_(embed_avg)
    flat, indices = torch.randn(5, 2), torch.tensor([2, 2, 0, 3, 3])
    whole.observe(flat, indices)
    whole.commit(one)
    torch.testing.assert_close(one, _rosinality_ema(cluster_size, embed_avg, flat, indices, 0.75), rtol=1e-6, atol=1e-6)

    poisoned = one.clone()
    whole.observe(flat * float("nan"), indices)
    whole.discard()  # the step skipped this window
    whole.commit(poisoned)
    assert torch.equal(poisoned, one)


def test_vq_settings_that_cannot_work_are_one_line_errors():
    with pytest.raises(ConfigError, match="quantizer applies to the vq family"):
        AutoencoderConfig(quantizer=QuantizerConfig(codebook_size=16))
    with pytest.raises(ConfigError, match="fsq's grid is fixed"):
        QuantizerConfig(kind="fsq", levels=[4, 4], ema_decay=0.99)
    with pytest.raises(ConfigError, match="levels applies to kind: fsq only"):
        QuantizerConfig(levels=[4, 4])
    with pytest.raises(ConfigError, match="model.loss.latent_noise does not apply beside the vq family, which quantises its latents"):
        _module(QUANTIZERS["vq"], latent_noise=0.1)


def test_a_pretrained_vq_model_keeps_its_codebook_and_refuses_another(tmp_path):
    from dataclasses import replace

    from tests.conftest import tiny_autoencoder_config
    from vaetrain.models import build_autoencoder

    config = tiny_autoencoder_config(family="vq", quantizer=QuantizerConfig(codebook_size=32))
    build_autoencoder(config).save_pretrained(tmp_path / "vq")
    ema = replace(config, pretrained=str(tmp_path / "vq"), quantizer=QuantizerConfig(codebook_size=32, ema_decay=0.99))
    assert not build_autoencoder(ema).quantize.embedding.weight.requires_grad  # fine-tuned with EMA updates
    with pytest.raises(ConfigError, match=r"quantizer 64 codes of dimension 4 \(the model has \(32, 4\)\)"):
        build_autoencoder(replace(ema, quantizer=QuantizerConfig(codebook_size=64)))
