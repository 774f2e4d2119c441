"""Peak memory of one `configs/wan-vae.yaml` training step with and without Wan's activation checkpointing
(`models/families/wan_chunks.py`), one JSON line per configuration.

    taskset -c 1 env OMP_NUM_THREADS=1 PYTHONPATH=src .venv/bin/python benchmarks/wan_checkpointing.py \
        --frames 17 --resolution 256 --width 96

Each arm runs in its own process (a fresh peak): the module exactly as `vaetrain fit --config
configs/wan-vae.yaml` builds it (`--width` scales `block_out_channels`, the preset's 96 by default), LPIPS
on a random VGG (no weights offline: the same network size), then one `GanStep` with the full objective
(reconstruction, LPIPS, KL, the 3D PatchGAN's term with LDM's adaptive weight, the discriminator's update)
and Adam from the preset, on one random clip of `--frames` x `--resolution`^2 in fp32, twice. Reported for the
second step (the first also allocates the gradients and Adam's states; its figures are reported beside): the
peak resident memory of the process during the step (Linux's `VmHWM`, reset before it; glibc's allocator set
to return freed tensors to the system, so resident memory follows the live tensors), the resident memory
before it (model, discriminator, LPIPS, EMA, gradients, optimizer states) and the step's growth above it (the
activations and the step's transients), and the step's seconds. That the two arms compute the same
gradients is tests/models/test_wan_checkpointing.py's job. On a GPU (`--device cuda`): CUDA's allocated
memory instead of the resident memory.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def resident_mb(field: str = "VmRSS") -> float:
    """The process's resident memory now (`VmRSS`) or at its peak since the last reset (`VmHWM`), in MiB."""
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) / 2**10 for line in status if line.startswith(field + ":"))


def reset_peak() -> None:
    """Linux: freed memory handed back to the system (glibc's `malloc_trim`), then the peak resident memory
    (`VmHWM`) starts again from the current (`clear_refs` 5)."""
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    with open("/proc/self/clear_refs", "w") as clear:
        clear.write("5")


def one_step(args: argparse.Namespace) -> dict:
    import torch

    from vaetrain.cli.fit import model_and_data
    from vaetrain.training.engines import PlainEngine

    widths = [args.width * m for m in (1, 2, 4, 4)]  # wan-vae.yaml: base_dim 96, dim_mult [1, 2, 4, 4]
    overrides = ["--model.autoencoder.block_out_channels", json.dumps(widths), "--model.loss.perceptual_backbone", "random"]
    overrides += ["--data.frames", str(args.frames), "--data.resolution", str(args.resolution), "--data.path", str(ROOT)]
    module, _, _ = model_and_data(["--config", str(ROOT / "configs" / "wan-vae.yaml"), *overrides])
    device = torch.device(args.device)
    module.to(device).train()
    module.set_gradient_checkpointing(args.checkpointing == "on")
    optimizers = {}
    for name, network, config in (("generator", module.autoencoder, module.optimizer_config.generator), ("discriminator", module.discriminator, None)):
        config = config or module.optimizer_config.discriminator
        optimizers[name] = torch.optim.Adam([p for p in network.parameters() if p.requires_grad], lr=config.lr, betas=tuple(config.betas))
    torch.manual_seed(0)
    clip = (torch.rand(1, 3, args.frames, args.resolution, args.resolution) * 2 - 1).to(device)
    figures = []
    for _ in range(2):  # the first step also allocates gradients and Adam's states; the second is the steady state
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
            before = torch.cuda.memory_allocated(device) / 2**20
        else:
            reset_peak()
            before = resident_mb()
        start = time.perf_counter()
        logs = module.gan_step(clip, PlainEngine(module.gan_step, optimizers), full_objective=True)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else resident_mb("VmHWM")
        figures.append((before, peak, time.perf_counter() - start))
    (first_before, first_peak, first_s), (before, peak, seconds) = figures
    return {
        "config": "configs/wan-vae.yaml",
        "width": args.width,
        "clip": f"{args.frames}x{args.resolution}x{args.resolution}",
        "gradient_checkpointing": args.checkpointing == "on",
        "precision": "32-true",
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "threads": torch.get_num_threads(),
        "memory": "cuda max allocated" if device.type == "cuda" else "peak RSS (VmHWM)",
        "first_step_peak_mb": round(first_peak, 1),
        "first_step_growth_mb": round(first_peak - first_before, 1),
        "peak_mb": round(peak, 1),
        "before_step_mb": round(before, 1),
        "step_growth_mb": round(peak - before, 1),
        "first_step_s": round(first_s, 1),
        "step_s": round(seconds, 1),
        "loss_finite": bool(all(torch.isfinite(torch.as_tensor(v)).all() for v in logs.values())),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=17)
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--width", type=int, default=96, help="base channels (wan-vae.yaml: 96)")
    parser.add_argument("--arms", default="off,on", help="checkpointing settings to run, each in its own process")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--checkpointing", choices=("off", "on"), help=argparse.SUPPRESS)  # one arm, in this process
    args = parser.parse_args()
    if args.checkpointing:
        print(json.dumps(one_step(args)), flush=True)
        return
    for arm in args.arms.split(","):
        command = [sys.executable, __file__, "--checkpointing", arm, *sys.argv[1:]]
        # glibc keeps freed blocks below its mmap threshold for reuse, so the resident memory would stay at the
        # first step's peak; a fixed 64 KiB threshold gives every tensor its own mapping, returned when freed
        result = subprocess.run(command, capture_output=True, text=True, env=os.environ | {"MALLOC_MMAP_THRESHOLD_": "65536"})
        lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
        if result.returncode or not lines:
            tail = (result.stderr.strip().splitlines() or ["no output"])[-1]
            print(json.dumps({"gradient_checkpointing": arm == "on", "failed": f"exit {result.returncode}: {tail}"}), flush=True)
        else:
            print(lines[-1], flush=True)


if __name__ == "__main__":
    main()
