"""Clips as frames: the one rule by which image-shaped code (per-image losses, the 2D discriminator, metrics,
grids) reads video tensors. A clip batch is (B, C, T, H, W), the layout of diffusers' video autoencoders;
its frames are (B * T, C, H, W), clip by clip. Images (B, C, H, W) pass unchanged.

May import: nothing of vaetrain (every layer uses it).
"""

from __future__ import annotations

import torch


def is_clip(tensor: torch.Tensor) -> bool:
    return tensor.ndim == 5


def as_frames(tensor: torch.Tensor) -> torch.Tensor:
    """(B, C, T, H, W) -> (B * T, C, H, W); an image batch is returned as it is."""
    return tensor.transpose(1, 2).flatten(0, 1) if tensor.ndim == 5 else tensor


def as_clips(frames: torch.Tensor, length: int) -> torch.Tensor:
    """The inverse of `as_frames` for clips of `length` frames."""
    return frames.unflatten(0, (-1, length)).transpose(1, 2)
