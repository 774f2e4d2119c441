import io

import datasets
import numpy as np
import pytest
from PIL import Image

from tests.conftest import tiny_module, tiny_trainer
from vaetrain.data import SampleDataModule
from vaetrain.errors import ConfigError


def _png(seed: int, size=(40, 36)) -> bytes:
    rng = np.random.default_rng(seed)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.fixture
def hf_dataset_dir(tmp_path):
    images = [{"bytes": _png(i), "path": None} for i in range(9)] + [{"bytes": b"broken bytes", "path": None}]
    features = datasets.Features({"picture": datasets.Image(), "label": datasets.Value("int64")})
    dataset = datasets.Dataset.from_dict({"picture": images, "label": list(range(10))}, features=features)
    path = tmp_path / "hf_saved"
    datasets.DatasetDict({"train": dataset}).save_to_disk(str(path))
    return path


def _settings(**overrides):
    return dict(resolution=32, batch_size=2, val_size=1, num_workers=0, bad_fraction_min_samples=10_000) | overrides


def test_saved_hf_dataset_trains_and_reports_its_bad_row(hf_dataset_dir):
    datamodule = SampleDataModule(path=str(hf_dataset_dir), image_column="picture", **_settings())
    assert datamodule.source.spec.kind == "hf"
    module = tiny_module()
    tiny_trainer(max_steps=5).fit(module, datamodule)
    assert module.counters.generator_steps == 5
    assert [name.endswith("[8]") for name in datamodule.tracker.examples] == [True]  # row 9 is row 8 of train


def test_parquet_folder_is_a_hf_source(tmp_path):
    folder = tmp_path / "parquet"
    folder.mkdir()
    features = datasets.Features({"image": datasets.Image()})
    datasets.Dataset.from_dict({"image": [{"bytes": _png(i), "path": None} for i in range(6)]}, features=features).to_parquet(
        str(folder / "train-00000.parquet")
    )
    datamodule = SampleDataModule(path=str(folder), **_settings())
    assert datamodule.source.spec.kind == "hf"
    tiny_trainer(max_steps=2).fit(tiny_module(), datamodule)


def test_hf_errors_name_the_key(hf_dataset_dir):
    with pytest.raises(ConfigError, match="data.image_column 'image' not in dataset"):
        SampleDataModule(path=str(hf_dataset_dir), **_settings()).prepare_split()
    with pytest.raises(ConfigError, match="data.split 'validation'"):
        SampleDataModule(path=str(hf_dataset_dir), image_column="picture", split="validation", **_settings()).prepare_split()


@pytest.mark.parametrize("kind", ["txt", "csv"])
def test_file_list_selects_a_subset(image_folder, tmp_path, kind):
    files = sorted(p.relative_to(image_folder) for p in image_folder.rglob("*.*"))[:5]
    listing = tmp_path / f"subset.{kind}"
    if kind == "txt":
        listing.write_text("".join(f"{f}\n" for f in files))
    else:
        listing.write_text("label,path\n" + "".join(f"0,{f}\n" for f in files))
    datamodule = SampleDataModule(path=str(image_folder), file_list=str(listing), **_settings())
    assert sorted(datamodule.source.records("train").files + datamodule.source.records("val").files) == sorted(image_folder / f for f in files)


def test_file_list_naming_missing_files_fails(image_folder, tmp_path):
    listing = tmp_path / "subset.txt"
    listing.write_text("nope.jpg\n")
    with pytest.raises(ConfigError, match="nope.jpg"):
        SampleDataModule(path=str(image_folder), file_list=str(listing), **_settings()).prepare_split()


def test_evaluation_samples_of_a_dataset_need_no_data_module(hf_dataset_dir):
    from vaetrain.data import SampleSet, SourceSpec, evaluation_samples

    spec = SourceSpec(path=str(hf_dataset_dir), image_column="picture", val_size=1)
    everything = list(evaluation_samples(SampleSet(spec, resolution=32), part="all", batch_size=4))
    assert sum(len(b["pixels"]) for b in everything) == 9 and sum(len(b["bad"]) for b in everything) == 1
    native = list(evaluation_samples(SampleSet(spec, resolution="native"), part="train", max_images=3))
    assert [tuple(b["pixels"].shape) for b in native] == [(1, 3, 36, 40)] * 3  # whole images, one per batch


def test_a_resolved_spec_means_the_same_from_another_folder(image_folder, monkeypatch, tmp_path):
    from vaetrain.data import SourceSpec

    monkeypatch.chdir(image_folder.parent)
    resolved = SourceSpec(path=image_folder.name).resolved()
    assert resolved.kind == "folder" and resolved.path == str(image_folder)
    assert SourceSpec(path="owner/dataset-on-the-hub").resolved() == SourceSpec(path="owner/dataset-on-the-hub", kind="hf")
    monkeypatch.chdir(tmp_path)
    assert SampleDataModule(path=resolved.path, **_settings(val_size=0.05)).source.spec == resolved


def test_a_separate_validation_source(image_folder, tmp_path):
    """data.val_path validates on its own collection; every image of data.path then trains."""
    from tests.conftest import write_images

    write_images(tmp_path / "held_out", 3, sizes=[(50, 50)], seed=7)
    datamodule = SampleDataModule(path=str(image_folder), val_path=str(tmp_path / "held_out"), **_settings(val_size=4))
    datamodule.setup("fit")
    assert len(datamodule.source.records("train")) == 12  # val_size is ignored: nothing of path validates
    batches = list(datamodule.val_dataloader())
    assert sum(b["pixels"].shape[0] for b in batches) == 3
    validation, part = datamodule.describe_validation()
    assert validation.source.path == str(tmp_path / "held_out") and part == "all"


def test_file_list_of_a_dataset_or_shards_is_refused(hf_dataset_dir, tmp_path):
    """A file list selects files of a folder; with another kind of source it would be silently ignored."""
    listing = tmp_path / "list.txt"
    listing.write_text("a.png\n")
    with pytest.raises(ConfigError, match="data.file_list selects files of a folder; .* is a hf source"):
        SampleDataModule(path=str(hf_dataset_dir), file_list=str(listing))
    with pytest.raises(ConfigError, match="data.file_list selects files of a folder; .* is a webdataset source"):
        SampleDataModule(path=str(tmp_path / "shards-{000..003}.tar"), file_list=str(listing))
