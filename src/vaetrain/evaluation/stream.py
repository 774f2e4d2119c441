"""Videos of any length through a causal video autoencoder, chunk by chunk, in bounded memory.

A family that streams (`Family.chunks`: Wan's `WanChunks`) gets the first frame, then chunks of 4 frames,
each encoded through the caches the previous chunk left and decoded latent frame by latent frame as soon as
its latents exist; frames are read as they are needed (`data.decoding.video.video_frames`) and written as
they come (`VideoWriter`). Peak memory is one chunk (tiled in space with `TilingConfig`) and the caches, not
the video: `benchmarks/stream_recon.py` measures it. The result equals diffusers' one-pass reconstruction
(tests/evaluation/test_stream.py).

HunyuanVideo and LTX-Video are not streamed: diffusers' classes have no caches to carry from one chunk to the
next (their causal convolutions pad each window with its own first frame, and their long clips are blended
overlapping windows), so `recon` reads such a video whole and says so once.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Iterator
from contextlib import nullcontext

import torch
from torch import nn

from vaetrain.errors import LongerThanTrained
from vaetrain.evaluation.reconstruct import TilingConfig, pad_to_multiple, tiled
from vaetrain.models.families import Posterior, downsampling_factor, family_of
from vaetrain.models.families.kl import gaussian_posterior

PRECISIONS = ("32", "bf16")
"""What `recon` / `eval --precision` run the autoencoder in (`auto`, resolved by the command: what `fit` picks)."""


def autocast(device: torch.device, precision: str):
    """bf16 autocast for "bf16", nothing for "32"."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision '{precision}' is not one of {PRECISIONS}")
    return torch.autocast(device.type, dtype=torch.bfloat16) if precision == "bf16" else nullcontext()


def frame_groups(frames: Iterable[torch.Tensor], chunk: int) -> Iterator[tuple[torch.Tensor, int]]:
    """(T, C, H, W) groups of the frames as a causal encoder reads them: the first alone, then `chunk` at a
    time, the last group filled up by repeating its last frame; with each, how many of its frames are real."""
    group, size = [], 1
    for frame in frames:
        group.append(frame)
        if len(group) == size:
            yield torch.stack(group), size
            group, size = [], chunk
    if group:
        real = len(group)
        yield torch.stack(group + [group[-1]] * (size - real)), real


class ChunkedReconstruction:
    """One clip's reconstruction, chunk after chunk: `step(chunk)` (B, C, t, H, W in [-1, 1], any sides) ->
    (posterior, reconstruction) of that chunk, in float32, cropped back to the chunk's size."""

    def __init__(self, model: nn.Module, precision: str = "32") -> None:
        self.model, self.precision = model, precision
        self.stream = family_of(model).chunks(model)
        if self.stream is None:
            raise ValueError(f"{type(model).__name__} is not streamed (see vaetrain.evaluation.stream)")
        self.factor = downsampling_factor(model)

    @torch.no_grad()
    def step(self, chunk: torch.Tensor) -> tuple[Posterior, torch.Tensor]:
        height, width = chunk.shape[-2:]
        padded, _ = pad_to_multiple(chunk, self.factor)
        with autocast(chunk.device, self.precision):
            posterior = gaussian_posterior(self.stream.encode(padded).float())
            decoded = self.stream.decode(posterior.mean)
        return posterior, decoded.float()[..., :height, :width]


def streamed_encode_decode(model: nn.Module, clips: torch.Tensor, tiling: TilingConfig | None = None, precision: str = "32") -> tuple[Posterior, torch.Tensor]:
    """`reconstruct.encode_decode` of clips (B, C, T, H, W) held in memory, run chunk by chunk (the first
    frame, then 4 at a time, the last chunk filled up with the clip's last frame and cut back)."""
    stream = ChunkedReconstruction(model, precision)
    chunk, length = family_of(model).frame_chunk(model), clips.shape[2]
    posteriors, pieces = [], []
    with tiled(model, tiling):
        for group, real in frame_groups(clips.unbind(2), chunk):
            posterior, decoded = stream.step(group.permute(1, 2, 0, 3, 4))
            posteriors.append(posterior)
            pieces.append(decoded[:, :, :real])
    mean, logvar = (torch.cat([getattr(p, name) for p in posteriors], dim=2) for name in ("mean", "logvar"))
    reconstruction = torch.cat(pieces, dim=2)
    assert reconstruction.shape[2] == length
    return Posterior(mean, logvar), reconstruction


def warn_if_longer(frames: int, longest: int | None, where: str) -> bool:
    """Warns (`LongerThanTrained`) when `frames` exceeds the longest clip the model trained on; whether it did."""
    if longest is None or frames <= longest:
        return False
    warnings.warn(
        LongerThanTrained(
            f"{where}: {frames} frames, but the model trained on clips of at most {longest}; chunks past frame {longest} use feature caches it never saw"
        ),
        stacklevel=2,
    )
    return True
