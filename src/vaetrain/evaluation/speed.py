"""Encode/decode speed, peak memory, and whether decoding in float16 overflows (the SDXL-VAE failure)."""

from __future__ import annotations

import copy
import resource
import time
from dataclasses import dataclass

import torch
from torch import nn

from vaetrain.models.families import decode, encode

FP16_MAX = float(torch.finfo(torch.float16).max)  # 65504


@dataclass
class SpeedReport:
    """Images/second over `repeats` timed passes after one warm-up pass. `peak_memory_mb`: CUDA max
    allocated during encode + decode on a GPU; on CPU the process's peak resident memory (an upper bound
    that includes everything the process holds)."""

    encode_img_per_s: float
    decode_img_per_s: float
    peak_memory_mb: float


@dataclass
class Fp16Report:
    """Largest |activation| of any module while decoding in float16, and whether an inf/NaN appeared."""

    max_abs_activation: float
    nonfinite: bool


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def measure_speed(model: nn.Module, images: torch.Tensor, *, repeats: int = 3) -> SpeedReport:
    """Times the model's own encode and decode on `images` (one batch, already on the model's device)."""
    device = images.device
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    latents = encode(model, images).mode()  # warm-up
    decode(model, latents)
    timings = {"encode": 0.0, "decode": 0.0}
    for _ in range(repeats):
        _synchronize(device)
        start = time.perf_counter()
        latents = encode(model, images).mode()
        _synchronize(device)
        middle = time.perf_counter()
        decode(model, latents)
        _synchronize(device)
        timings["encode"] += middle - start
        timings["decode"] += time.perf_counter() - middle
    count = len(images) * repeats
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device) / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    return SpeedReport(count / timings["encode"], count / timings["decode"], peak)


@torch.no_grad()
def check_fp16_decode(model: nn.Module, latents: torch.Tensor) -> Fp16Report:
    """Decodes `latents` with a float16 copy of the model, watching every module's output."""
    half = copy.deepcopy(model).half().eval()  # (`.to(dtype)` makes diffusers warn about fp32 modules it has none of)
    largest = torch.zeros((), dtype=torch.float32, device=latents.device)
    nonfinite = torch.zeros((), dtype=torch.bool, device=latents.device)

    def watch(module, inputs, output) -> None:
        nonlocal largest, nonfinite
        tensor = output.sample if hasattr(output, "sample") else output
        if isinstance(tensor, torch.Tensor) and tensor.is_floating_point():
            finite = tensor.isfinite()
            nonfinite = nonfinite | ~finite.all()
            magnitude = tensor.float().abs().where(finite, torch.zeros((), device=tensor.device)).max()
            largest = torch.maximum(largest, magnitude)

    handles = [module.register_forward_hook(watch) for module in half.decoder.modules()]
    if getattr(half, "post_quant_conv", None) is not None:
        handles.append(half.post_quant_conv.register_forward_hook(watch))
    try:
        decode(half, latents.to(torch.float16))
    finally:
        for handle in handles:
            handle.remove()
    return Fp16Report(float(largest), bool(nonfinite))
