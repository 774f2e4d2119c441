"""The real-footage video race: held-out scenes never reach training (the committed videos and the frame
folders made from them), the per-chunk PSNR and drift are the evaluation's, and the CPU-time budget stops a
run once spent, across a resume (an injected clock: no sleeping, no timing)."""

import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

ROOT = Path(__file__).parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))
import real_footage  # noqa: E402 - benchmarks/ is a folder of scripts, not a package
from cpu_budget import CpuBudget  # noqa: E402

from vaetrain.data.decoding.video import write_video  # noqa: E402


def test_the_committed_videos_split_into_training_and_held_out_scenes():
    train, held = real_footage.split_scenes(ROOT / "benchmarks" / "videos")
    assert {p.stem for p in held} == set(real_footage.HOLDOUT)
    assert not {p.stem for p in train} & set(real_footage.HOLDOUT)
    assert len(train) + len(held) >= 6 and len(held) >= 2
    sources = (ROOT / "benchmarks" / "videos" / "SOURCES.md").read_text()
    assert all(f"`{p.name}`" in sources for p in train + held)  # each file's origin and licence is written down


def test_an_unknown_held_out_scene_is_refused(tmp_path):
    (tmp_path / "a.mp4").write_bytes(b"x")
    with pytest.raises(SystemExit, match="nope"):
        real_footage.split_scenes(tmp_path, ("nope",))
    with pytest.raises(SystemExit, match="no training scene"):
        real_footage.split_scenes(tmp_path, ("a",))


def test_held_out_scenes_become_evaluation_clips_and_never_training_frames(tmp_path):
    rng = np.random.default_rng(0)
    for name, frames in (("alpha", 9), ("beta", 9), ("gamma", 11)):
        write_video(tmp_path / "videos" / f"{name}.mp4", [rng.integers(0, 256, (48, 80, 3), dtype=np.uint8) for _ in range(frames)])
    train, held = real_footage.prepare(tmp_path / "videos", tmp_path / "footage", ("gamma",), side=16, eval_frames=5)
    assert sorted(p.name for p in train.iterdir()) == ["alpha", "beta"]
    assert len(list((train / "alpha").glob("*.png"))) == 9  # every frame, short side 16
    assert sorted(p.name for p in held.iterdir()) == ["gamma_0", "gamma_1"]  # 11 frames: two clips of 5, the rest dropped
    assert len(list((held / "gamma_1").glob("*.png"))) == 5
    assert not any("gamma" in p.as_posix() for p in train.rglob("*"))


def test_held_out_clips_are_measured_by_chunk_through_the_library(tmp_path):
    """The race's chunks and drift are `eval`'s (`evaluation.temporal`): 9-frame clips of a tiny Wan give three
    chunks, and the drift is chunk 3 minus chunk 2."""
    from tests.conftest import TINY_WAN
    from vaetrain.models import AutoencoderConfig, build_autoencoder

    rng = np.random.default_rng(0)
    for clip in ("a_0", "a_1"):
        (tmp_path / clip).mkdir()
        for index in range(9):
            Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(tmp_path / clip / f"{index:03d}.png")
    torch.manual_seed(0)
    measured = real_footage.evaluate_clips(build_autoencoder(AutoencoderConfig(**TINY_WAN)).eval(), tmp_path, frames=9)
    assert measured["clips"] == 2 and len(measured["chunks"]) == 3
    assert measured["drift"] == pytest.approx(measured["chunks"][2] - measured["chunks"][1])


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_cpu_budget_stops_once_spent_and_continues_after_a_resume():
    clock, trainer = Clock(), SimpleNamespace(should_stop=False)
    budget = CpuBudget(10, clock=clock)
    budget.on_train_start(trainer, None)
    clock.now += 9.5
    budget.on_train_batch_end(trainer, None, None, None, 0)
    assert not trainer.should_stop
    clock.now += 0.5
    budget.on_train_batch_end(trainer, None, None, None, 1)
    assert trainer.should_stop
    saved = budget.state_dict()
    assert saved["spent"] == pytest.approx(10.0)

    clock, trainer = Clock(), SimpleNamespace(should_stop=False)  # a resumed run: a new process, a new clock
    clock.now = 5.0
    resumed = CpuBudget(20, clock=clock)
    resumed.load_state_dict({"spent": 6.0})
    resumed.on_train_start(trainer, None)
    clock.now += 13.0
    resumed.on_train_batch_end(trainer, None, None, None, 0)
    assert not trainer.should_stop and resumed.spent() == pytest.approx(19.0)
    clock.now += 1.0
    resumed.on_train_batch_end(trainer, None, None, None, 1)
    assert trainer.should_stop


def test_the_cpu_budget_counts_nothing_before_training_starts():
    clock = Clock()
    budget = CpuBudget(5, clock=clock)
    clock.now += 1000  # model building, data listing: not training
    assert budget.spent() == 0.0
    with pytest.raises(ValueError):
        CpuBudget(0)
