"""Run by test_distributed.py as a script: Lightning's DDP launcher starts it once per rank.

Each rank trains the tiny model for a few steps and writes the fingerprints of the training images
it saw, and a checksum of its weights, to OUT/rank{r}.json.
"""

import hashlib
import json
import sys
from pathlib import Path

import lightning as L
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.conftest import tiny_module
from vaetrain.data import SampleDataModule


class Fingerprints(L.Callback):
    def __init__(self) -> None:
        self.seen: list[str] = []

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        self.seen += [hashlib.sha1(image.numpy().tobytes()).hexdigest() for image in batch]


def main(folder: str, out: str, steps: int) -> None:
    L.seed_everything(0)
    datamodule = SampleDataModule(path=folder, resolution=32, batch_size=1, val_size=2, num_workers=0, crop="center_crop", flip=False)
    recorder = Fingerprints()
    trainer = L.Trainer(
        accelerator="cpu",
        devices=2,
        strategy="ddp_find_unused_parameters_true",
        max_steps=steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        callbacks=[recorder],
    )
    module = tiny_module(loss={"disc_start_step": 1})
    trainer.fit(module, datamodule)
    weights = {
        name: float(torch.cat([p.detach().flatten() for p in network.parameters()]).double().sum())
        for name, network in (("autoencoder", module.autoencoder), ("discriminator", module.discriminator), ("ema", module.ema))
    }
    Path(out, f"rank{trainer.global_rank}.json").write_text(json.dumps({"seen": recorder.seen, "weights": weights}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
