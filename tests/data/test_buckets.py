import torch

from tests.conftest import tiny_module, tiny_trainer, write_images
from vaetrain.data import SampleDataModule
from vaetrain.data.sources.folders import list_images
from vaetrain.data.sources.records import FileRecords
from vaetrain.data.streams.buckets import BucketPlan, assign_buckets

BUCKETS = [(48, 48), (40, 64), (64, 40)]


def _folder(tmp_path):
    write_images(tmp_path / "mixed", 24, sizes=[(48, 48), (80, 48), (48, 80)])
    return tmp_path / "mixed"


def test_images_go_to_the_nearest_aspect_ratio(tmp_path):
    files = list_images(_folder(tmp_path))
    members = assign_buckets(FileRecords(files), BUCKETS)
    from PIL import Image

    for bucket, indices in enumerate(members):
        for i in indices:
            width, height = Image.open(files[i]).size
            assert (width > height, width < height) == (bucket == 1, bucket == 2)


def test_each_batch_has_one_shape_and_the_plan_is_deterministic(tmp_path):
    datamodule = SampleDataModule(path=str(_folder(tmp_path)), buckets=BUCKETS, batch_size=2, val_size=3, num_workers=0, resolution=32)
    shapes, batches = set(), []
    for _, batch in zip(range(12), datamodule.train_dataloader()):
        assert len({tuple(image.shape) for image in batch["pixels"]}) == 1
        shapes.add(tuple(batch["pixels"].shape[2:]))
        batches.append(batch["pixels"])
    assert shapes == set(BUCKETS)
    datamodule.set_start_sample(7 * 2)  # 7 batches of 2 images
    resumed = [b["pixels"] for _, b in zip(range(5), datamodule.train_dataloader())]
    assert all(torch.equal(a, b) for a, b in zip(batches[7:], resumed))


def test_plan_covers_every_full_batch_once_per_epoch():
    plan = BucketPlan([[0, 1, 2, 3, 4], [5, 6, 7]], batch_size=2, seed=0)
    assert plan.batches_per_epoch == 3
    epoch = [plan.batch(n) for n in range(3)]
    indices = sorted(i for _, batch in epoch for i in batch)
    assert len(indices) == len(set(indices)) == 6


def test_training_on_buckets(tmp_path):
    datamodule = SampleDataModule(path=str(_folder(tmp_path)), buckets=BUCKETS, batch_size=2, val_size=3, num_workers=0, resolution=32)
    module = tiny_module()
    tiny_trainer(max_steps=4).fit(module, datamodule)
    assert module.counters.generator_steps == 4


def test_a_crop_policy_beside_buckets_is_refused(tmp_path):
    import pytest

    from vaetrain.errors import ConfigError

    with pytest.raises(ConfigError, match="data.crop=center_crop does not apply with data.buckets"):
        SampleDataModule(path=str(_folder(tmp_path)), buckets=[[32, 32], [32, 48]], crop="center_crop")
