"""Training speed of a preset with the full objective active, as one JSON line.

    .venv/bin/python benchmarks/train_throughput.py --config configs/tiny.yaml \
        --data ../shared/data/tiny-imagenet-val --resolution 64 --micro-batch 8 --steps 30
    .venv/bin/python benchmarks/train_throughput.py --config configs/sd-vae-f8c4.yaml \
        --data ../shared/data/clothing --resolution 256 --micro-batch 8 --precision bf16-mixed --steps 50

The real training path (Lightning Trainer, the module's manual optimization, the data module) runs
`--steps` generator steps with the discriminator, its loss and the adaptive weight on from step 0
(`--disc-from-start`, default on) and LPIPS on. Reported: median step time and images/second over the
steps after `--warmup`, the loader's own rate (images/second it can supply, measured separately),
peak memory (CUDA max allocated, or the process's peak RSS on CPU), and model FLOPs per image counted
with `torch.utils.flop_counter.FlopCounterMode` over one `GanStep` (the step training runs; see
`step_flops`), with MFU against `--peak-tflops` on a GPU.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import sys
import time
from dataclasses import replace

import lightning as L
import torch
from torch.utils.flop_counter import FlopCounterMode

from vaetrain.cli.fit import model_and_data
from vaetrain.data import SampleDataModule
from vaetrain.training.engines import PlainEngine
from vaetrain.training.memory_budget import MemoryBudget
from vaetrain.training.memory_search import parse_memory_size
from vaetrain.training.module import AutoencoderModule
from vaetrain.training.precision import default_precision

PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L4": 121.0, "4090": 165.0, "4060": 44.0}  # dense bf16


class StepTimer(L.Callback):
    """Wall time of each training step (waiting for data excluded)."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self._start = 0.0

    def _sync(self, module) -> None:
        if module.device.type == "cuda":
            torch.cuda.synchronize(module.device)

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        self._sync(module)
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self._sync(module)
        self.times.append(time.perf_counter() - self._start)

    def on_train_start(self, trainer, module):
        if module.device.type == "cuda":  # the memory budget's probes ran before: not part of training
            torch.cuda.reset_peak_memory_stats(module.device)

    def on_train_end(self, trainer, module):
        self.peak_mb = peak_memory_mb(module.device)
        self.peak_reserved_mb = torch.cuda.max_memory_reserved(module.device) / 2**20 if module.device.type == "cuda" else None


def step_flops(module: AutoencoderModule, images: torch.Tensor) -> int:
    """FLOPs of one full training step: `GanStep` itself (the object training runs) with the GAN term and
    both networks, through `PlainEngine`, after the module has been moved to the meta device (shapes only:
    no memory, no time, at any size). Called once the benchmark's training is over, since the move leaves
    the module without data. FlopCounterMode counts convolutions and matmuls, forward and backward,
    including the adaptive weight's last-layer gradients; its per-module tracker is switched off, because
    it cannot follow the step's `autograd.grad` on a leaf tensor (the reconstruction's detached copy)."""
    module.to("meta").train()
    module.ema = None  # its update is elementwise (uncounted) and reads a count that meta tensors do not hold
    counter = FlopCounterMode(display=False)
    counter.mod_tracker = _NoModuleTracking()
    with counter:
        module.gan_step(images.to("meta"), _NoUpdates(module.gan_step), full_objective=True)
    return counter.get_total_flops()


class _NoUpdates(PlainEngine):
    """Meta tensors hold no values to step with; optimizer updates are elementwise work that
    FlopCounterMode does not count anyway."""

    def optimizer_step(self, network) -> None:
        return None


class _NoModuleTracking:
    """Stands in for FlopCounterMode's module tracker: every FLOP is counted under 'Global'."""

    parents = {"Global"}

    def __enter__(self):
        return self

    def __exit__(self, *args):
        return None


def build(configs: list[str], overrides: list[str]) -> tuple[AutoencoderModule, SampleDataModule, dict]:
    """The module and data module exactly as `vaetrain fit --config C1 --config C2 ... OVERRIDES` builds them
    (the CLI's own parser: layered presets, every key), without its trainer."""
    return model_and_data([arg for config in configs for arg in ("--config", config)] + overrides)


def loader_rate(datamodule: SampleDataModule, batches: int) -> float:
    """Images/second the training loader supplies with nothing else running."""
    datamodule.setup("fit")
    iterator = iter(datamodule.train_dataloader())
    next(iterator)
    start = time.perf_counter()
    for _ in range(batches):
        next(iterator)
    return batches * datamodule.batch_size / (time.perf_counter() - start)


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", action="append", help="a preset, or several layered in order (default configs/tiny.yaml)")
    parser.add_argument("--data", default=None, help="image folder (default: the preset's, or the bundled samples)")
    parser.add_argument("--resolution", type=int, default=None)
    parser.add_argument("--micro-batch", type=int, default=None)
    parser.add_argument("--precision", default=None, help="32, bf16-mixed, 16-mixed (default: the preset's, or as `fit` picks)")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5, help="steps left out of the timing")
    parser.add_argument("--no-disc-from-start", dest="disc_from_start", action="store_false")
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--accelerator", default="auto")
    parser.add_argument("--peak-tflops", type=float, default=None, help="the device's dense peak for MFU (default: by name)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (CPU)")
    parser.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None)
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None)
    parser.add_argument("--gradient-checkpointing", action=argparse.BooleanOptionalAction, default=None)
    parser.add_argument(
        "--perceptual-backbone",
        choices=["pretrained", "random"],
        default=None,
        help="random: LPIPS on an untrained backbone (same FLOPs; for machines without the weights)",
    )
    parser.add_argument("--gan-updates", choices=["both", "alternate"], default=None)
    parser.add_argument(
        "--max-memory",
        default=None,
        help="e.g. 8GB: cap this process's CUDA memory there and let "
        "the memory budget choose micro-batch and checkpointing (--micro-batch x 1 is the global batch)",
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    given = {
        "data.path": args.data,
        "data.resolution": args.resolution,
        "data.batch_size": args.micro_batch,
        "data.num_workers": args.workers,
        "model.loss.disc_start_step": 0 if args.disc_from_start else None,
        "model.loss.perceptual_backbone": args.perceptual_backbone,
        "model.speed.channels_last": args.channels_last,
        "model.speed.compile": args.compile,
        "model.training.gan_updates": args.gan_updates,
    }
    overrides = [f"--{key}={str(value).lower() if isinstance(value, bool) else value}" for key, value in given.items() if value is not None]
    L.seed_everything(0, verbose=False)
    configs = args.config or ["configs/tiny.yaml"]
    module, datamodule, trainer_config = build(configs, overrides)
    if args.gradient_checkpointing is not None:
        module.set_gradient_checkpointing(args.gradient_checkpointing)
    precision = args.precision or trainer_config.get("precision") or default_precision(args.accelerator)
    rate = loader_rate(datamodule, batches=10)

    timer = StepTimer()
    callbacks: list[L.Callback] = [timer]
    if args.max_memory:
        budget = parse_memory_size(args.max_memory)
        total = torch.cuda.get_device_properties(0).total_memory
        torch.cuda.set_per_process_memory_fraction(min(1.0, budget / total))
        callbacks.append(MemoryBudget(max_memory=args.max_memory))
    trainer = L.Trainer(
        accelerator=args.accelerator,
        devices=1,
        precision=precision,
        max_steps=args.steps + args.warmup,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        callbacks=callbacks,
    )
    trainer.fit(module, datamodule)
    device = module.device
    images = next(iter(datamodule.train_dataloader()))["pixels"]
    step_times = timer.times[args.warmup :]
    median = statistics.median(step_times)
    counters = replace(module.counters)
    # With `gan_updates: both` every micro-batch does the same work (median); `alternate` mixes generator
    # and cheaper discriminator batches, so their mean is the rate.
    seconds_per_batch = median if module.training_config.gan_updates == "both" else statistics.mean(step_times)
    images_per_second = datamodule.batch_size / seconds_per_batch
    optimizer_steps_per_batch = (counters.generator_steps + counters.discriminator_steps) / counters.micro_batches
    result = {
        "config": configs,
        "resolution": datamodule.resolution,
        "micro_batch": datamodule.batch_size,
        "precision": precision,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "threads": torch.get_num_threads(),
        "steps_timed": len(step_times),
        "speed": {k: getattr(module.speed_config, k) for k in ("channels_last", "compile")},
        "gan_updates": module.training_config.gan_updates,
        "gradient_checkpointing": module.autoencoder.is_gradient_checkpointing,
        "step_s_median": round(median, 4),
        "s_per_optimizer_step": round(seconds_per_batch / optimizer_steps_per_batch, 4),
        "img_per_s": round(images_per_second, 2),
        "loader_img_per_s": round(rate, 1),
        "peak_memory_mb": round(timer.peak_mb, 1),
        "peak_memory_mb_per_image": round(timer.peak_mb / datamodule.batch_size, 1),
        "generator_steps": counters.generator_steps,
        "discriminator_steps": counters.discriminator_steps,
    }
    flops = step_flops(module, images)  # last: it moves the module to the meta device
    result["gflops_per_image"] = round(flops / len(images) / 1e9, 2)
    if args.max_memory:
        result["max_memory"] = args.max_memory
        result["accumulate"] = module.memory_plan["accumulate"]
    if device.type == "cuda":
        result["peak_reserved_mb"] = round(timer.peak_reserved_mb, 1)
        name = torch.cuda.get_device_name(device)
        peak = args.peak_tflops or next((v for k, v in PEAK_TFLOPS.items() if k in name), None)
        if peak:
            result["mfu"] = round(flops / len(images) * images_per_second / (peak * 1e12), 4)
    print(json.dumps(result))


if __name__ == "__main__":
    sys.exit(main())
