import numpy as np
import pytest
import torch

from tests.conftest import tiny_module, tiny_trainer
from tests.data.bad_files import BAD, GOOD_BUT_ODD, write_bad_folder
from vaetrain.data import BadImage, SampleDataModule, TooManyBadFiles, decode_image
from vaetrain.errors import ConfigError


@pytest.fixture
def bad_folder(tmp_path):
    return write_bad_folder(tmp_path / "bad")


@pytest.mark.parametrize("name", sorted(BAD))
def test_each_bad_kind_is_rejected_with_its_reason(bad_folder, name):
    with pytest.raises(BadImage, match=BAD[name]):
        decode_image(bad_folder / name)


@pytest.mark.parametrize("name", GOOD_BUT_ODD)
def test_odd_but_valid_images_become_rgb(bad_folder, name):
    image = decode_image(bad_folder / name, background=(255, 255, 255))
    assert image.mode == "RGB"


def test_odd_images_are_converted_correctly(bad_folder):
    def pixels(name):
        return np.asarray(decode_image(bad_folder / name, background=(255, 255, 255)))

    assert tuple(pixels("cmyk.jpg")[20, 20]) == pytest.approx((255, 0, 0), abs=8)
    assert pixels("gray16.png").min() == 255  # 16-bit full scale -> 8-bit full scale, not clipped garbage
    rgba = pixels("rgba.png")
    assert tuple(rgba[5, 5]) == (0, 0, 255) and tuple(rgba[5, 40]) == (255, 255, 255)  # composited on white
    assert pixels("la.png").min() == 255 and pixels("palette_alpha.png").min() == 255
    assert tuple(pixels("palette.png")[0, 0]) == (10, 200, 30)
    assert decode_image(bad_folder / "exif_rotated.jpg").size == (40, 48)  # EXIF orientation applied


def test_draft_mode_decodes_large_jpegs_smaller(tmp_path):
    from PIL import Image

    Image.new("RGB", (1024, 768), (1, 2, 3)).save(tmp_path / "big.jpg")
    assert min(decode_image(tmp_path / "big.jpg", min_short_side=128).size) >= 128
    assert decode_image(tmp_path / "big.jpg", min_short_side=128).size[0] < 1024
    assert decode_image(tmp_path / "big.jpg").size == (1024, 768)


def _datamodule(folder, **overrides):
    settings = dict(path=str(folder), resolution=32, batch_size=4, val_size=1, num_workers=0, bad_fraction_min_samples=10_000)
    return SampleDataModule(**(settings | overrides))


def test_a_folder_of_bad_files_trains_and_counts_each(bad_folder):
    datamodule = _datamodule(bad_folder)
    module = tiny_module()
    tiny_trainer(max_steps=5).fit(module, datamodule)  # 20 samples: one full pass over the 19 training files
    assert module.counters.generator_steps == 5
    assert set(datamodule.tracker.examples) == {str(bad_folder / name) for name in BAD}
    assert datamodule.tracker.bad >= len(BAD)
    assert datamodule.tracker.metrics()["data/bad_files"] == len(BAD)


def test_too_many_bad_files_stop_the_run_naming_examples(bad_folder):
    datamodule = _datamodule(bad_folder, max_bad_fraction=0.01, bad_fraction_min_samples=10)
    with pytest.raises(TooManyBadFiles, match="data.max_bad_fraction=0.01; e.g. .*(zero_bytes|truncated|corrupt|not_an_image|bomb)"):
        tiny_trainer(max_steps=5).fit(tiny_module(), datamodule)


def test_small_images_can_be_skipped_and_counted(tmp_path):
    from tests.conftest import write_images

    write_images(tmp_path / "mixed", 8, sizes=[(64, 64), (20, 20)])

    def one_epoch(**overrides):
        datamodule = _datamodule(tmp_path / "mixed", resolution=32, val_size=1, batch_size=7, **overrides)
        return next(iter(datamodule.train_dataloader()))  # the 7 training images, in the training stream

    skipped = one_epoch(small_images="skip")
    assert skipped["pixels"].shape == (7, 3, 32, 32)  # skipped ones are replaced: the batch keeps its size
    assert skipped["small"] > 0 and not skipped["bad"]
    assert one_epoch()["small"] == 0  # upscaled instead


def test_crop_policies_give_the_resolution(image_folder):
    for crop in ("random_crop", "center_crop", "resize_crop"):
        dataset = _datamodule(image_folder, crop=crop, resolution=32).samples("train", train=True)
        assert all(dataset[i]["pixels"].shape == (3, 32, 32) for i in range(len(dataset)))
    center = _datamodule(image_folder, crop="center_crop", flip=False).samples("train", train=True)
    assert torch.equal(center[0]["pixels"], center[0]["pixels"])  # deterministic


def _mostly_junk_folder(folder, good: int = 2, junk: int = 8):
    """`junk` files that are not images, sorted first, then `good` real images."""
    from tests.conftest import write_images

    folder.mkdir(parents=True)
    for i in range(junk):
        (folder / f"a_junk_{i:02d}.jpg").write_bytes(b"not a jpeg at all" * (i + 1))
    for i, path in enumerate(write_images(folder / "tmp", good, sizes=[(40, 40)])):
        path.rename(folder / f"z_good_{i:02d}{path.suffix}")
    return folder


def test_validation_of_only_bad_files_stops_before_training_naming_them(tmp_path):
    """80 % junk, the first files junk: the evenly spaced validation picks (files 0 and 5) are all unusable."""
    datamodule = SampleDataModule(
        path=str(_mostly_junk_folder(tmp_path / "junk")), resolution=32, batch_size=2, val_size=2, num_workers=0, max_bad_fraction=1.0
    )
    module = tiny_module()
    with pytest.raises(ConfigError, match=r"data.path: none of the 2 validation images is usable \(.*a_junk_00.jpg: .*a_junk_05.jpg"):
        tiny_trainer(max_steps=2, limit_val_batches=1.0, num_sanity_val_steps=2).fit(module, datamodule)
    assert module.counters.micro_batches == 0


def test_validation_measures_the_usable_images_and_counts_the_others(tmp_path):
    datamodule = SampleDataModule(
        path=str(_mostly_junk_folder(tmp_path / "junk")), resolution=32, batch_size=2, val_size=5, num_workers=0, max_bad_fraction=1.0
    )
    trainer = tiny_trainer(max_steps=2, limit_val_batches=1.0, num_sanity_val_steps=2, val_check_interval=2)
    trainer.fit(tiny_module(), datamodule)
    assert datamodule.tracker.metrics()["data/bad_validation_files"] == 4  # files 0, 2, 4 and 6; file 8 is good
    assert torch.isfinite(trainer.callback_metrics["val/psnr"])
