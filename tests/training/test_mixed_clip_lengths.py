"""Clips of mixed lengths (`data.frames: [5, 9]`, `data/streams/clip_lengths.py`): each micro-batch's
length is drawn from the list by (data.seed, batch number) alone, so a resumed run reads what an
uninterrupted one read; the checkpoint records the longest clip trained on."""

from pathlib import Path

import lightning as L
import pytest
import torch

from tests.conftest import TINY_WAN, fit_with_checkpoints, tiny_module
from vaetrain.checkpoints.schema import load_checkpoint
from vaetrain.cli import main
from vaetrain.data import SampleDataModule
from vaetrain.data.sources.spec import StreamLayout
from vaetrain.data.streams.clip_lengths import ClipLengthStream, clip_length, clip_lengths
from vaetrain.data.streams.resumable import ResumableImageStream
from vaetrain.errors import ConfigError


class _Clips(torch.utils.data.Dataset):
    """Record i as a clip of `frames` frames holding the value i."""

    def __init__(self, frames: int) -> None:
        self.frames = frames

    def __len__(self) -> int:
        return 10

    def __getitem__(self, index: int) -> dict:
        return {"pixels": torch.full((3, self.frames, 2, 2), float(index)), "bad": [], "small": 0}


def _stream(rank: int, world_size: int, start_sample: int = 0, seed: int = 1) -> ClipLengthStream:
    layout, start = StreamLayout(2, seed, rank, world_size, start_sample), start_sample // (2 * world_size)
    streams = {n: ResumableImageStream(_Clips(n), batch_size=2, seed=seed, rank=rank, world_size=world_size, start_batch=start) for n in (9, 5)}
    return ClipLengthStream(streams, layout)


def test_each_batchs_length_is_drawn_from_the_seed_and_its_number_alone():
    assert clip_lengths(9) == (9,) and clip_lengths([9, 5, 9]) == (5, 9) and clip_lengths(0) == ()
    draws = [clip_length((5, 9), 1, n) for n in range(64)]
    assert draws == [clip_length((5, 9), 1, n) for n in range(64)] and set(draws) == {5, 9}
    assert draws != [clip_length((5, 9), 2, n) for n in range(64)]
    straight = iter(_stream(0, 1))
    batches = [next(straight) for _ in range(6)]
    assert [batch[0]["pixels"].shape[1] for batch in batches] == draws[:6]
    resumed = iter(_stream(0, 1, start_sample=4 * 2))  # after 4 batches of 2
    for batch in batches[4:]:
        assert all(torch.equal(a["pixels"], b["pixels"]) for a, b in zip(batch, next(resumed)))
    ranks = [_stream(rank, 2) for rank in (0, 1)]  # two processes: the same length, disjoint records
    for number in range(6):
        first, second = (stream.batch(number) for stream in ranks)
        assert {s["pixels"].shape[1] for s in first + second} == {draws[number]}
        unmixed = ResumableImageStream(_Clips(9), batch_size=2, seed=1, world_size=2)  # the positions an unmixed run reads there:
        expected = [unmixed.sample_at_global(number * 4 + i * 2 + rank) for rank in (0, 1) for i in (0, 1)]
        assert [s["pixels"][0, 0, 0, 0] for s in first + second] == [s["pixels"][0, 0, 0, 0] for s in expected]


class _Lengths(L.Callback):
    def __init__(self) -> None:
        self.lengths: list[int] = []

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        self.lengths.append(batch.shape[2])


def _run(root: Path, folder: Path, max_steps: int, ckpt_path: str | None = None) -> tuple:
    module = tiny_module(autoencoder=TINY_WAN, loss={"disc_start_step": 1}, discriminator={"kind": "patchgan3d"})
    data = SampleDataModule(path=str(folder), frames=[9, 5], resolution=16, batch_size=2, val_size=2, num_workers=0, seed=1)
    lengths = _Lengths()
    fit_with_checkpoints(root, module, data, max_steps, ckpt_path=ckpt_path, callbacks=[lengths])
    return module, lengths.lengths


def test_mixed_lengths_train_and_resume_exactly(tmp_path, video_folder):
    straight, seen = _run(tmp_path / "straight", video_folder, 4)
    _, first_half = _run(tmp_path / "resumed", video_folder, 2)
    resumed, second_half = _run(tmp_path / "resumed", video_folder, 4, ckpt_path=str(tmp_path / "resumed" / "last.ckpt"))
    assert seen == first_half + second_half == [clip_length((5, 9), 1, n) for n in range(4)] and set(seen) == {5, 9}
    for key, value in straight.state_dict().items():  # weights, EMA, discriminator
        assert torch.equal(value, resumed.state_dict()[key]), key
    _, record = load_checkpoint(tmp_path / "resumed" / "last.ckpt")
    assert record.plan["longest_clip"] == 9 and record.data["clip"]["frames"] == 9  # evaluation reads the longest


def test_a_bad_list_is_one_line_naming_data_frames(tmp_path, video_folder, capsys):
    with pytest.raises(ConfigError, match="data.frames: an empty list"):
        SampleDataModule(path=str(video_folder), frames=[])
    with pytest.raises(ConfigError, match="data.frames as a list reads folders"):
        SampleDataModule(path=str(tmp_path / "shard-{000..001}.tar"), frames=[5, 9])
    tiny = ["--model.autoencoder.block_out_channels", "[8, 16, 16]", "--model.autoencoder.latent_channels", "4", "--data.num_workers", "0"]
    tiny += ["--model.autoencoder.architecture", "{temperal_downsample: [true, true]}", "--trainer.default_root_dir", str(tmp_path / "run")]
    code = main(["fit", "--config", "configs/wan-tiny.yaml", "--data.path", str(video_folder), "--data.frames", "[5, 6]", "--data.resolution", "32", *tiny])
    error = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and error[-1].startswith("vaetrain: error:") and "data.frames=6" in error[-1]
