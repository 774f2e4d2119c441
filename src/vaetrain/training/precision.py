"""The precision a run gets when its config leaves `trainer.precision` unset (null)."""

from __future__ import annotations

import torch


def native_bf16(device_type: str) -> bool:
    """Whether the device computes bfloat16 in hardware, so bf16 autocast is a speed-up, not an emulation.

    CUDA: Ampere and newer. CPU: AVX512-BF16 or AMX (oneDNN's bf16 convolutions and matmuls); on other
    CPUs bf16 autocast runs emulated and slower than fp32.
    """
    if device_type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False)
    if device_type == "cpu":
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    return False


def default_precision(accelerator: object = "auto") -> str:
    """`bf16-mixed` (fp32 master weights, bf16 autocast) where the chosen device does bf16 natively, else
    `32-true`. fp16 is never chosen by itself: its overflow in VAE decoders needs a person's decision."""
    name = accelerator if isinstance(accelerator, str) else type(accelerator).__name__.lower()
    uses_cuda = torch.cuda.is_available() and any(key in name for key in ("auto", "gpu", "cuda"))
    return "bf16-mixed" if native_bf16("cuda" if uses_cuda else "cpu") else "32-true"
