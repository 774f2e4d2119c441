"""Beyond 8-bit RGB: lossless reading of 16-bit and multi-band files, normalisation both ways, bad files
with their reason, metrics at the data's bit depth, LPIPS over channel triplets."""

import math

import numpy as np
import pytest
import torch

from vaetrain.data import SampleDataModule
from vaetrain.data.decoding.arrays import read_pixels
from vaetrain.data.decoding.pixels import PixelFormat, measure_bounds
from vaetrain.data.decoding.samples import build_decoder
from vaetrain.data.sample_sets import SampleSet, evaluation_samples
from vaetrain.data.sources.spec import SourceSpec
from vaetrain.errors import ConfigError
from vaetrain.evaluation.metrics import ReconstructionMetrics
from vaetrain.losses.perceptual import ChannelTriplets, channel_triplets

from fixtures.synthetic import ct_slice, multispectral, write_ct_pngs, write_multiband_tiffs, write_rgb16_png

LIMIT = 10**9


def test_a_16_bit_single_channel_png_round_trips_exactly(tmp_path):
    (path,) = write_ct_pngs(tmp_path, 1)
    pixels = PixelFormat(channels=1, bit_depth=16)
    raw = read_pixels(path, pixels, LIMIT)
    assert raw.shape == (1, 64, 64) and raw.max() > 255  # not squeezed to 8 bits
    normalised = build_decoder("native", pixels=pixels)(path, "x")["pixels"]  # the data module's decoder
    assert normalised.min() >= -1 and normalised.max() <= 1 and normalised.dtype == torch.float32
    back = pixels.denormalise(normalised).round().to(torch.int64)
    assert torch.equal(back[0], torch.from_numpy(ct_slice(64, seed=0).astype(np.int64)))


def test_multi_band_tiffs_read_alike_planar_or_interleaved_and_npy_in_either_layout(tmp_path):
    pixels = PixelFormat(channels=6, bit_depth=16)
    (planar,) = write_multiband_tiffs(tmp_path / "planar", 1, planar=True)
    (contig,) = write_multiband_tiffs(tmp_path / "contig", 1, planar=False)
    expected = torch.from_numpy(multispectral(6, 64, seed=0).astype(np.float32))
    assert torch.equal(read_pixels(planar, pixels, LIMIT), expected)
    assert torch.equal(read_pixels(contig, pixels, LIMIT), expected)
    np.save(tmp_path / "chw.npy", multispectral(6, 64, seed=0))
    np.save(tmp_path / "hwc.npy", np.moveaxis(multispectral(6, 64, seed=0), 0, -1))
    assert torch.equal(read_pixels(tmp_path / "chw.npy", pixels, LIMIT), expected)
    assert torch.equal(read_pixels((tmp_path / "hwc.npy").read_bytes(), pixels, LIMIT), expected)  # bytes (HF, shards) too


def test_a_16_bit_colour_png_keeps_its_16_bits(tmp_path):
    array = np.random.default_rng(0).integers(0, 65536, (16, 20, 3)).astype(np.uint16)
    write_rgb16_png(tmp_path / "rgb16.png", array)
    raw = read_pixels(tmp_path / "rgb16.png", PixelFormat(bit_depth=16), LIMIT)
    assert torch.equal(raw, torch.from_numpy(np.moveaxis(array, -1, 0).astype(np.float32)))


def test_wrong_band_count_and_wrong_depth_are_counted_as_bad_not_a_crash(tmp_path):
    folder = tmp_path / "tiles"
    write_multiband_tiffs(folder, 6, bands=6, size=32)
    write_multiband_tiffs(tmp_path / "four", 1, bands=4, size=32)[0].rename(folder / "tile_002b.tif")
    np.save(folder / "eight_bit.npy", np.zeros((32, 32, 6), dtype=np.uint8))
    data = SampleDataModule(path=str(folder), channels=6, bit_depth=16, resolution=32, batch_size=2, val_size=0, num_workers=0, max_bad_fraction=1.0)
    data.prepare_split()
    reports = [data.samples("all", train=False)[i] for i in range(8)]
    bad = {name.rsplit("/", 1)[-1]: reason for r in reports for name, reason in r["bad"]}
    assert bad == {"tile_002b.tif": "4 channels where data.channels=6", "eight_bit.npy": "uint8 data where data.bit_depth=16 expects uint16"}
    loader = iter(data.train_dataloader())  # training replaces them and counts them: one epoch of 8 positions
    for _ in range(4):
        assert data.on_before_batch_transfer(next(loader), 0).shape == (2, 6, 32, 32)
    assert data.tracker.bad == 2 and set(data.tracker.reasons) == set(bad.values())


def test_percentile_bounds_are_each_channels_percentiles_and_values_beyond_clip():
    rng = np.random.default_rng(1)
    images = [torch.from_numpy(rng.integers(0, 4000, (2, 8, 8)).astype(np.float32)) for _ in range(3)]
    measured = measure_bounds(PixelFormat(channels=2, bit_depth=16, normalization="percentile", percentiles=(5, 95)), images)
    values = np.concatenate([i.numpy().reshape(2, -1) for i in images], axis=1)
    assert measured.low == pytest.approx(tuple(np.percentile(values, 5, axis=1)))
    assert measured.high == pytest.approx(tuple(np.percentile(values, 95, axis=1)))
    low, high = measured.low[1], measured.high[1]
    raw = torch.tensor([[[low]], [[high + 500]]]).expand(2, 1, 1).clone()
    raw[0] = measured.low[0] + (measured.high[0] - measured.low[0]) / 4  # a quarter of the way: -0.5
    assert measured.normalise(raw).flatten().tolist() == pytest.approx([-0.5, 1.0])


def test_psnr_of_16_bit_images_uses_65535_as_the_peak_whatever_the_normalisation():
    pixels = measure_bounds(
        PixelFormat(channels=1, bit_depth=16, normalization="percentile", percentiles=(1, 99)),
        [torch.from_numpy(ct_slice(32, seed=s).astype(np.float32))[None] for s in range(2)],
    )
    target_raw = torch.from_numpy(ct_slice(32, seed=0).astype(np.float32))[None, None]
    target_raw = target_raw.clamp(pixels.low[0], pixels.high[0])  # inside the bounds, so normalising loses nothing
    recon_raw = (target_raw + 100.0 * torch.sign(torch.randn_like(target_raw))).clamp(pixels.low[0], pixels.high[0])
    metrics = ReconstructionMetrics(pixels=pixels)
    metrics.update(pixels.normalise(target_raw), pixels.normalise(recon_raw))
    mse = (recon_raw - target_raw).double().square().mean().item()
    expected = 10 * math.log10(65535.0**2 / mse)
    values = metrics.compute()
    assert values["psnr"] == pytest.approx(expected, abs=1e-3)
    assert values["psnr_c0"] == pytest.approx(expected, abs=1e-3)
    assert values["psnr"] > 50  # an error of ~100 in 65535 is small; read as 8-bit it would be ~ -3 dB


def test_per_channel_psnr_tells_the_channels_apart():
    target = torch.zeros(1, 3, 32, 32)
    reconstruction = target.clone()
    reconstruction[:, 2] += 0.2  # only channel 2 is wrong
    metrics = ReconstructionMetrics()
    metrics.update(target, reconstruction)
    values = metrics.compute()
    assert values["psnr_c0"] == values["psnr_c1"] == pytest.approx(200.0)  # the floor of a perfect channel
    assert values["psnr_c2"] == pytest.approx(10 * math.log10(1 / 0.1**2), abs=1e-4)
    assert values["ssim_c0"] == pytest.approx(1.0) and values["ssim_c2"] < 1.0 + 1e-6


def test_lpips_over_channel_triplets_is_the_mean_of_lpips_on_each_triplet():
    calls = []

    def fake_lpips(x, y):  # a per-image distance that depends on which channels it sees
        calls.append(x.shape)
        return (x - y).abs().flatten(1).mean(dim=1) * torch.arange(1, len(x) + 1)

    triplets = channel_triplets(6, [[0, 1, 2], [3, 4, 5]])
    x, y = torch.rand(2, 6, 8, 8), torch.rand(2, 6, 8, 8)
    value = ChannelTriplets(fake_lpips, triplets)(x, y)
    by_hand = [(x[:, t] - y[:, t]).abs().flatten(1).mean(dim=1) for t in triplets]
    weights = torch.arange(1, 5).view(2, 2).float()  # the batch of 4 = 2 triplets x 2 images
    assert torch.allclose(value, (by_hand[0] * weights[0] + by_hand[1] * weights[1]) / 2)
    assert calls == [torch.Size([4, 3, 8, 8])]  # one forward for all triplets
    assert channel_triplets(1, None) == [[0, 0, 0]] and channel_triplets(3, None) is None
    assert channel_triplets(2, "each") == [[0, 0, 0], [1, 1, 1]]
    with pytest.raises(ConfigError, match="LPIPS is defined on RGB"):
        channel_triplets(6, None)
    with pytest.raises(ConfigError, match="3 channel indices below 6"):
        channel_triplets(6, [[0, 1, 6]])


def test_bad_pixel_settings_are_one_line_errors_naming_the_key(tmp_path):
    with pytest.raises(ConfigError, match="data.bit_depth must be 8 or 16"):
        PixelFormat(bit_depth=12)
    with pytest.raises(ConfigError, match="data.display_channels"):
        PixelFormat(channels=6, display=(0, 1, 6))
    with pytest.raises(ConfigError, match="data.value_range"):
        PixelFormat(value_range=(5, 5))


def test_grayscale_and_rgba_8_bit_images_keep_their_channels(tmp_path):
    from PIL import Image

    Image.fromarray(np.full((8, 8, 4), (10, 20, 30, 40), dtype=np.uint8), "RGBA").save(tmp_path / "a.png")
    rgba = read_pixels(tmp_path / "a.png", PixelFormat(channels=4), LIMIT)
    assert rgba[:, 0, 0].tolist() == [10, 20, 30, 40]  # alpha kept, not composited
    gray = read_pixels(tmp_path / "a.png", PixelFormat(channels=1), LIMIT)
    assert gray.shape == (1, 8, 8)
    images = SampleSet(SourceSpec(str(tmp_path)), resolution=8, pixels=PixelFormat(channels=4))
    (batch,) = list(evaluation_samples(images))
    assert batch["pixels"].shape == (1, 4, 8, 8)


def test_npy_arrays_in_an_8_bit_rgb_collection_read_as_rgb_or_count_as_bad(tmp_path):
    array = np.random.default_rng(0).integers(0, 256, (8, 8, 3)).astype(np.uint8)
    np.save(tmp_path / "a.npy", array)
    np.save(tmp_path / "b.npy", array.astype(np.uint16))
    decoder = build_decoder("native")
    expected = torch.from_numpy(np.moveaxis(array, -1, 0).astype(np.float32)) / 127.5 - 1
    assert torch.allclose(decoder(tmp_path / "a.npy", "a")["pixels"], expected, atol=1e-6)
    assert decoder(tmp_path / "b.npy", "b")["bad"] == [("b", "uint16 data where data.bit_depth=8 expects uint8")]


def test_a_fixed_value_range_maps_its_ends_to_minus_one_and_one_and_clips_beyond():
    pixels = PixelFormat(channels=1, bit_depth=16, value_range=(0, 4095))
    raw = torch.tensor([0.0, 4095 / 2, 4095.0, 9000.0]).view(1, 1, 4)
    assert pixels.normalise(raw).flatten().tolist() == pytest.approx([-1.0, 0.0, 1.0, 1.0])
    assert pixels.denormalise(pixels.normalise(raw)).flatten().tolist() == pytest.approx([0.0, 4095 / 2, 4095.0, 4095.0])
    assert pixels.peak == 65535 and not pixels.is_rgb8 and PixelFormat(value_range=(0, 255)).is_rgb8
