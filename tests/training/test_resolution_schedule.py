"""Progressive resolution: crops change size at the configured generator step, a run resumed before or
after the change continues exactly (weights, counters, crop sizes), and a memory budget plans every phase."""

from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from torch.utils.data import DataLoader

from tests.conftest import tiny_module, tiny_trainer
from tests.training.memory_readers import InputSizeReader
from vaetrain.data import SampleDataModule
from vaetrain.data.streams.decoded import collate_samples
from vaetrain.data.streams.schedule import PhasedStream, schedule_phases
from vaetrain.errors import ConfigError
from vaetrain.training.memory_budget import MemoryBudget

SCHEDULE = [[3, 32]]


class Shapes(L.Callback):
    def __init__(self) -> None:
        self.seen: list[tuple[int, int, int]] = []  # (generator step, micro-batch, side)

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        self.seen.append((module.counters.generator_steps, batch.shape[0], batch.shape[-1]))


def _data(folder: Path, **kwargs) -> SampleDataModule:
    return SampleDataModule(path=str(folder), resolution=16, resolution_schedule=SCHEDULE, batch_size=2, val_size=2, num_workers=0, seed=0, **kwargs)


def _run(root: Path, folder: Path, max_steps: int, ckpt_path: str | None = None, callbacks=(), training: dict | None = None):
    L.seed_everything(0)
    module = tiny_module(loss={"perceptual_weight": 0.0, "disc_start_step": 1}, training=training)
    shapes = Shapes()
    checkpoint = ModelCheckpoint(dirpath=root, save_last=True, every_n_train_steps=2)
    trainer = tiny_trainer(root, max_steps=max_steps, callbacks=[checkpoint, shapes, *callbacks], enable_checkpointing=True)
    trainer.fit(module, _data(folder), ckpt_path=ckpt_path, weights_only=True)
    return module, shapes.seen


def test_the_schedule_switches_at_its_step_and_survives_resume_across_the_switch(tmp_path, image_folder):
    straight, seen = _run(tmp_path / "straight", image_folder, max_steps=5)
    assert seen == [(0, 2, 16), (1, 2, 16), (2, 2, 16), (3, 2, 32), (4, 2, 32)]
    _run(tmp_path / "resumed", image_folder, max_steps=2)  # stops before the change (checkpoint at step 2)
    resumed, seen_after = _run(tmp_path / "resumed", image_folder, max_steps=5, ckpt_path=str(tmp_path / "resumed" / "last.ckpt"))
    assert seen_after == seen[2:]
    assert resumed.counters == straight.counters
    for key, value in straight.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[key]), key
    _run(tmp_path / "late", image_folder, max_steps=4)  # a checkpoint after the change (step 4) resumes at 32 px
    _, seen_late = _run(tmp_path / "late", image_folder, max_steps=5, ckpt_path=str(tmp_path / "late" / "last.ckpt"))
    assert seen_late == [(4, 2, 32)]


def test_a_sample_depends_on_its_global_position_alone_whatever_the_micro_batch_and_workers(image_folder):
    data = _data(image_folder)
    data.prepare_split()

    def stream(micro_batches, start_sample=0):
        phases = schedule_phases(16, SCHEDULE, micro_batches)
        streams = [data.source.train_samples(data.decoder(train=True, resolution=p.resolution), _layout(p.micro_batch)) for p in phases]
        return PhasedStream(streams, phases, samples_per_step=4, start_sample=start_sample)

    def images(dataset, count, workers=0):
        loader = DataLoader(dataset, batch_size=None, num_workers=workers, collate_fn=collate_samples)
        return [batch["pixels"] for batch, _ in zip(loader, range(count))]

    twos = images(stream([2, 2]), 10)
    assert [b.shape[-1] for b in twos] == [16] * 6 + [32] * 4  # 3 steps x 4 images at 16 px, then 32 px
    ones = images(stream([2, 1]), 14, workers=2)
    assert all(torch.equal(a, b) for a, b in zip(twos[:6], ones[:6]))
    assert torch.equal(torch.cat(twos[6:]), torch.cat(ones[6:14]))  # the same images in batches of 1
    resumed = images(stream([2, 2], start_sample=14), 3)  # mid-phase 1 (12 images before it, then one batch of 2)
    assert all(torch.equal(a, b) for a, b in zip(twos[7:], resumed))


def test_bad_schedules_are_one_line_errors(image_folder, tmp_path):
    with pytest.raises(ConfigError, match="steps must increase"):
        _data(image_folder).__class__(path=str(image_folder), resolution_schedule=[[5, 32], [5, 64]])
    with pytest.raises(ConfigError, match="resolution_schedule \\(step 3\\)=33 is not divisible"):
        SampleDataModule(path=str(image_folder), resolution=16, resolution_schedule=[[3, 33]]).check_resolution(2)
    with pytest.raises(ConfigError, match="not buckets, not shards"):
        SampleDataModule(path=str(image_folder), resolution=16, resolution_schedule=SCHEDULE, buckets=[[16, 16]])


def test_the_memory_budget_plans_every_phase_and_applies_each_at_its_change(tmp_path, image_folder):
    """An input-size reader stands in for CUDA: a 16 px micro-batch of 4 (3,072 values) fits 50 MB at
    10 kB a value, a 32 px one fits only as 1 image (3,072 values; 2 would be 6,144), so the 32 px phase
    trains 1 image x 4 accumulation while the global batch stays 4 images a step."""
    budget = MemoryBudget(max_memory="50MB", headroom=0.0, reader=InputSizeReader(bytes_per_value=10_000))
    module, seen = _run(tmp_path, image_folder, max_steps=5, callbacks=[budget], training={"accumulate_grad_batches": 2})
    assert {(micro, side) for step, micro, side in seen if step >= 3} == {(1, 32)}
    assert {side for step, _, side in seen if step < 3} == {16}
    per_step = {}
    for step, micro, _ in seen:
        per_step[step] = per_step.get(step, 0) + micro
    assert per_step == {step: 4 for step in range(5)}  # the global batch is kept in every phase
    phases = module.plan.memory["phases"]
    assert [(p["start_step"], p["resolution"], p["micro_batch"], p["accumulate"]) for p in phases][1] == (3, 32, 1, 4)
    assert phases[0]["micro_batch"] * phases[0]["accumulate"] == 4


def _layout(batch_size):
    from vaetrain.data.sources.spec import StreamLayout

    return StreamLayout(batch_size=batch_size, seed=0)
