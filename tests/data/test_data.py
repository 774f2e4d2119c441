import pytest
import torch
from torch.utils.data import DataLoader

from tests.conftest import write_images
from vaetrain.data import (
    DecodedImages,
    FileRecords,
    ResumableImageStream,
    SampleDataModule,
    SampleDecoder,
    collate_samples,
    image_transform,
    list_images,
    split_train_val,
)
from vaetrain.errors import ConfigError


def test_missing_and_empty_folders_fail_naming_the_path(tmp_path):
    with pytest.raises(ConfigError, match="does-not-exist"):
        list_images(tmp_path / "does-not-exist")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no images here")
    with pytest.raises(ConfigError, match="no images"):
        list_images(tmp_path / "empty")


def test_listing_is_recursive_sorted_and_case_insensitive(tmp_path):
    paths = write_images(tmp_path, 6)
    upper = tmp_path / "deep" / "IMG.JPEG"
    upper.parent.mkdir()
    upper.write_bytes(paths[0].read_bytes())
    files = list_images(tmp_path)
    assert len(files) == 7 and files == sorted(files) and upper in files


def test_split_is_deterministic_disjoint_and_complete(tmp_path):
    files = [tmp_path / f"{i:03d}.png" for i in range(100)]
    train, val = split_train_val(files, 0.1)
    assert len(val) == 10 and not set(train) & set(val) and sorted(train + val) == files
    assert split_train_val(files, 0.1) == (train, val)
    assert len(split_train_val(files, 7)[1]) == 7


def test_transforms_give_the_requested_size_in_range(image_folder):
    files = list_images(image_folder)
    for train in (True, False):
        dataset = DecodedImages(FileRecords(files), SampleDecoder(image_transform(48, train=train)))  # some are smaller: upscaled
        for i in range(len(dataset)):
            image = dataset[i]["pixels"]
            assert image.shape == (3, 48, 48)
            assert image.min() >= -1 and image.max() <= 1


def test_resolution_must_divide_by_the_downsampling_factor(image_folder):
    datamodule = SampleDataModule(path=str(image_folder), resolution=36)
    with pytest.raises(ConfigError, match="data.resolution=36"):
        datamodule.check_resolution(8)
    datamodule.check_resolution(4)


def _stream(folder, **kwargs):
    dataset = DecodedImages(FileRecords(list_images(folder)), SampleDecoder(image_transform(32, train=True)))
    return ResumableImageStream(dataset, batch_size=2, seed=3, **kwargs)


def _batches(stream, count, workers=0):
    loader = DataLoader(stream, batch_size=stream.batch_size, num_workers=workers, collate_fn=collate_samples)
    out = []
    for batch in loader:
        out.append(batch["pixels"])
        if len(out) == count:
            return out
    return out


def test_stream_resumes_where_it_stopped_with_any_worker_count(image_folder):
    straight = _batches(_stream(image_folder), 9)
    resumed = _batches(_stream(image_folder, start_batch=5), 4, workers=2)
    for a, b in zip(straight[5:], resumed):
        assert torch.equal(a, b)


def test_ranks_read_disjoint_samples_covering_each_epoch(image_folder):
    size = len(list_images(image_folder))
    streams = [_stream(image_folder, rank=r, world_size=2) for r in range(2)]
    for epoch in range(2):
        seen = [s.index_at(p) for s in streams for p in range(epoch * size // 2, (epoch + 1) * size // 2)]
        assert sorted(seen) == list(range(size))
    assert [streams[0].index_at(p) for p in range(size // 2)] != [streams[0].index_at(p) for p in range(size // 2, size)]


def test_bundled_samples_are_the_default(tmp_path):
    datamodule = SampleDataModule(resolution=64, batch_size=2, val_size=2, num_workers=0)
    datamodule.setup("fit")
    assert len(datamodule.source.records("train").files) >= 8 and len(datamodule.source.records("val").files) == 2
    assert datamodule.fixed_images(8).shape == (8, 3, 64, 64)
