import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
from lightning.pytorch.callbacks import ModelCheckpoint

from tests.conftest import tiny_module, tiny_trainer, write_images
from vaetrain.data import SampleDataModule

READER = Path(__file__).with_name("ddp_reader.py")


def _expected_fingerprints(folder: Path) -> set[str]:
    datamodule = SampleDataModule(path=str(folder), resolution=32, batch_size=1, val_size=2, num_workers=0, crop="center_crop", flip=False)
    dataset = datamodule.samples("train", train=True)
    return {hashlib.sha1(dataset[i]["pixels"].numpy().tobytes()).hexdigest() for i in range(len(dataset))}


@pytest.mark.slow  # 17 s of real processes; the default suite's DDP training test reads with two processes too
def test_two_processes_read_disjoint_samples_covering_the_epoch(tmp_path):
    folder = tmp_path / "images"
    write_images(folder, 12)  # 10 training images after the 2 validation ones
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LOCAL_RANK", "WORLD_SIZE", "MASTER_", "NODE_RANK"))}
    subprocess.run([sys.executable, str(READER), str(folder), str(tmp_path), "5"], check=True, env=env, timeout=300)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    seen = [set(r["seen"]) for r in ranks]
    assert all(len(r["seen"]) == 5 for r in ranks)
    assert not seen[0] & seen[1]
    assert seen[0] | seen[1] == _expected_fingerprints(folder)
    assert ranks[0]["weights"] == ranks[1]["weights"]  # gradients were synchronised


class Fingerprints(L.Callback):
    def __init__(self) -> None:
        self.seen: list[str] = []

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        self.seen += [hashlib.sha1(image.numpy().tobytes()).hexdigest() for image in batch]


def test_interrupted_and_resumed_epoch_sees_each_sample_once(tmp_path):
    folder = tmp_path / "images"
    write_images(folder, 12)

    def run(max_steps: int, ckpt_path: str | None = None) -> list[str]:
        datamodule = SampleDataModule(path=str(folder), resolution=32, batch_size=2, val_size=2, num_workers=0, crop="center_crop", flip=False)
        recorder = Fingerprints()
        checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True, every_n_train_steps=1)
        trainer = tiny_trainer(tmp_path, max_steps=max_steps, callbacks=[recorder, checkpoint], enable_checkpointing=True)
        trainer.fit(tiny_module(), datamodule, ckpt_path=ckpt_path)
        return recorder.seen

    first = run(2)
    second = run(5, ckpt_path=str(tmp_path / "ckpt" / "last.ckpt"))
    assert len(first) == 4 and len(second) == 6
    assert sorted(first + second) == sorted(_expected_fingerprints(folder))
