"""Run by test_distributed_training.py as a script: trains the tiny model with DEVICES processes (gloo,
Lightning's own launcher) on a global batch of 4, then saves the final weights; optionally resumes
from a checkpoint, or saves one."""

import argparse
import os
import sys
from datetime import timedelta
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.strategies import DDPStrategy

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.conftest import tiny_module
from vaetrain.data import SampleDataModule
from vaetrain.export.callback import ExportDiffusers
from vaetrain.models.quantizer import QuantizerConfig
from vaetrain.training.callbacks import ReconstructionGrid
from vaetrain.training.optim import OptimizerConfig
from vaetrain.training.sharding import full_state_dict
from vaetrain.training.strategies import FullyShardedStrategy

GLOBAL_BATCH = 4
QUANTIZERS = {
    "ema": QuantizerConfig(codebook_size=32, ema_decay=0.9),
    "alive": QuantizerConfig(codebook_size=32, ema_decay=0.9, kmeans_init=True, restart_threshold=1.0),
}


class MarkStarted(L.Callback):
    """Writes OUT/started_rank{r} once training runs, so a test knows when to kill a process."""

    def __init__(self, out: str) -> None:
        self.out = Path(out)

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        marker = self.out / f"started_rank{trainer.global_rank}"
        if not marker.exists():
            marker.parent.mkdir(parents=True, exist_ok=True)
            marker.write_text(str(os.getpid()))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("folder")
    parser.add_argument("out")
    parser.add_argument("--devices", type=int, default=2)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--resume")
    parser.add_argument("--timeout", type=float, default=60)
    parser.add_argument("--micro-batch", type=int, default=2)
    parser.add_argument("--strategy", choices=["ddp", "fsdp"], default="ddp")
    parser.add_argument("--export", action="store_true", help="write OUT/diffusers at the end")
    parser.add_argument("--validate", action="store_true", help="validation and a reconstruction grid every 2 steps")
    parser.add_argument("--balance", choices=["adaptive", "gradnorm"], default="adaptive")
    parser.add_argument("--vq", nargs="?", const="ema", choices=sorted(QUANTIZERS), help="the vq family: an EMA codebook, or alive: + k-means, restarts")
    parser.add_argument("--end-to-end", action="store_true", help="REPA-E's SiT trained beside, with its own optimizer; every rank saves it")
    args = parser.parse_args()

    L.seed_everything(0)
    micro_batch = args.micro_batch
    datamodule = SampleDataModule(path=args.folder, resolution=32, batch_size=micro_batch, val_size=2, num_workers=0, crop="center_crop", flip=False)
    # Deterministic posterior (the mode): sampled noise depends on how a batch is split across processes.
    # lr 1e-4 (the default): Adam turns float rounding in near-zero gradients into lr-sized steps, so a
    # large test lr would measure rounding, not synchronisation.
    gradnorm = {"balance": "gradnorm", "reconstruction_weight": 0.001, "disc_weight": 1.0} if args.balance == "gradnorm" else {}
    module = tiny_module(
        loss={"disc_start_step": 2, "sample_posterior": False} | gradnorm,
        training={"global_batch_size": GLOBAL_BATCH},
        optimizer=OptimizerConfig(lr=1e-4),
        autoencoder={"family": "vq", "quantizer": QUANTIZERS[args.vq]} if args.vq else None,
    )
    if args.end_to_end:
        from tests.training.test_end_to_end import TINY_SIT, e2e_module
        from vaetrain.losses.end_to_end import EndToEndConfig

        module = e2e_module(loss={"end_to_end": EndToEndConfig(**TINY_SIT), "disc_start_step": 2}, training={"global_batch_size": GLOBAL_BATCH})
    strategy = DDPStrategy(find_unused_parameters=True, process_group_backend="gloo", timeout=timedelta(seconds=args.timeout)) if args.devices > 1 else "auto"
    if args.strategy == "fsdp":
        strategy = FullyShardedStrategy(process_group_backend="gloo", timeout=timedelta(seconds=args.timeout))
    checkpoint = ModelCheckpoint(dirpath=Path(args.out) / "checkpoints", save_last=True, every_n_train_steps=args.steps)
    trainer = L.Trainer(
        accelerator="cpu",
        devices=args.devices,
        strategy=strategy,
        max_steps=args.steps,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=1 if args.validate else 0,
        val_check_interval=2,
        check_val_every_n_epoch=None,
        callbacks=[
            checkpoint,
            MarkStarted(args.out),
            *([ExportDiffusers(latent_statistics_images=4)] if args.export else []),
            *([ReconstructionGrid(every_n_steps=2, num_images=2)] if args.validate else []),
        ],
        default_root_dir=args.out,
    )
    trainer.fit(module, datamodule, ckpt_path=args.resume)
    state = {  # gathered on every process (a collective under FSDP), complete on rank 0
        f"{name}.{key}": value
        for name, network in (("autoencoder", module.autoencoder), ("discriminator", module.discriminator), ("ema", module.ema), ("codebook", module.codebook))
        if network is not None
        for key, value in full_state_dict(network).items()
    }
    if args.end_to_end:  # each rank's own copy: data parallelism must keep them equal
        sit = {f"diffusion.{k}": v for k, v in full_state_dict(module.diffusion).items()}
        torch.save(sit, Path(args.out) / f"sit_rank{trainer.global_rank}.pt")
    if trainer.is_global_zero:
        torch.save({"state": state, "counters": vars(module.counters), "accumulate": module.accumulate}, Path(args.out) / "final.pt")


if __name__ == "__main__":
    main()
