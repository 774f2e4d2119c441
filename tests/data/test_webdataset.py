import io
import tarfile

import numpy as np
import pytest
from PIL import Image

from tests.conftest import tiny_module, tiny_trainer
from vaetrain.data import SampleDataModule, SampleDecoder, WebDatasetStream, image_transform
from vaetrain.errors import ConfigError


def _jpeg(seed: int) -> bytes:
    buffer = io.BytesIO()
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (36, 40, 3), dtype=np.uint8)).save(buffer, "JPEG")
    return buffer.getvalue()


def _write_shards(folder, shards: int = 4, per_shard: int = 5, bad_in_first: bool = True):
    folder.mkdir(parents=True, exist_ok=True)
    for s in range(shards):
        with tarfile.open(folder / f"shard-{s:05d}.tar", "w") as tar:
            for i in range(per_shard):
                data = b"not a jpeg" if (bad_in_first and s == 0 and i == 2) else _jpeg(s * 100 + i)
                for name, payload in ((f"s{s}_{i:03d}.jpg", data), (f"s{s}_{i:03d}.cls", str(i).encode())):
                    info = tarfile.TarInfo(name)
                    info.size = len(payload)
                    tar.addfile(info, io.BytesIO(payload))
    return f"{folder}/shard-{{00000..{shards - 1:05d}}}.tar"


def _keys(stream, count):
    out = []
    for sample in stream:
        out.append((sample["reader"], sample["position"], float(sample["pixels"].sum())))
        if len(out) == count:
            return out
    return out


def test_shards_train_and_report_bad_members(tmp_path):
    pattern = _write_shards(tmp_path / "shards")
    datamodule = SampleDataModule(path=pattern, resolution=32, batch_size=2, val_size=1, num_workers=0, shuffle_buffer=4, bad_fraction_min_samples=10_000)
    assert datamodule.source.spec.kind == "webdataset"
    module = tiny_module()
    tiny_trainer(max_steps=8, limit_val_batches=2, val_check_interval=4, check_val_every_n_epoch=None).fit(module, datamodule)
    assert module.counters.generator_steps == 8
    assert len(datamodule.source.urls("train")) == 3 and len(datamodule.source.urls("val")) == 1
    assert list(datamodule.tracker.examples) == [f"{tmp_path}/shards/shard-00000.tar:s0_002"]
    assert datamodule.source.positions  # where to resume


def test_readers_take_disjoint_shards_each_epoch(tmp_path):
    from vaetrain.data import expand_shards

    urls = expand_shards(_write_shards(tmp_path / "shards", shards=4, bad_in_first=False))
    decoder = SampleDecoder(image_transform(32, train=False))
    for epoch in range(2):
        shards_by_rank = []
        for rank in range(2):
            stream = WebDatasetStream(urls, decoder, seed=0, rank=rank, world_size=2, shuffle_buffer=1)
            samples = [s for s in _take(stream, 20) if s["position"][0] == epoch]
            assert len(samples) == 10  # 2 shards x 5 samples per reader and epoch
            shards_by_rank.append({s["name"].split(".tar:")[0] for s in samples})
        assert not shards_by_rank[0] & shards_by_rank[1] and len(shards_by_rank[0] | shards_by_rank[1]) == 4


def _take(stream, count):
    return [sample for _, sample in zip(range(count), stream)]


def test_resume_restarts_at_the_recorded_shard(tmp_path):
    pattern = _write_shards(tmp_path / "shards", shards=3, bad_in_first=False)
    from vaetrain.data import expand_shards

    urls = expand_shards(pattern)
    decoder = SampleDecoder(image_transform(32, train=False))
    straight = _keys(WebDatasetStream(urls, decoder, seed=1, shuffle_buffer=1), 15)
    resumed = _keys(WebDatasetStream(urls, decoder, seed=1, shuffle_buffer=1, start_positions={0: (0, 1)}, readers_at_save=1), 10)
    assert resumed == straight[5:15]  # shard 1 of the epoch re-read from its start, then on


def test_missing_shards_fail_naming_one(tmp_path):
    with pytest.raises(ConfigError, match="4 shards do not exist, e.g. .*shard-00000.tar"):
        SampleDataModule(path=str(tmp_path / "shard-{00000..00003}.tar"), num_workers=0).prepare_split()


def test_buckets_with_shards_fail_when_the_data_module_is_made(tmp_path):
    """Shards cannot be bucketed (sizes are unknown before reading): one line, before any training."""
    pattern = _write_shards(tmp_path / "shards", shards=2, bad_in_first=False)
    with pytest.raises(ConfigError, match="data.buckets: not supported for webdataset"):
        SampleDataModule(path=pattern, buckets=[[32, 32], [32, 48]], num_workers=0)


def test_evaluation_samples_read_shards_in_order(tmp_path):
    from vaetrain.data import SampleSet, SourceSpec, evaluation_samples

    pattern = _write_shards(tmp_path / "shards", shards=3, bad_in_first=True)
    loader = evaluation_samples(SampleSet(SourceSpec(path=pattern), resolution=32), part="all", batch_size=4)
    batches = list(loader)
    assert sum(len(b["pixels"]) for b in batches) == 14  # 15 members, one not an image
    assert [name for b in batches for name, _ in b["bad"]] == [f"{tmp_path}/shards/shard-00000.tar:s0_002"]
    assert all(b["pixels"].shape[1:] == (3, 32, 32) for b in batches)
