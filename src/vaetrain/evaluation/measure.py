"""The one measuring loop: batches of images -> a model -> `ReconstructionMetrics`. `vaetrain eval`, the
export's model card and the benchmarks all measure through `measure`; what differs between them is how a
batch becomes (reference, reconstruction): a `Pairs` function (`autoencoder_pairs` for an autoencoder's
own reconstruction, tiled or not). Validation during training is Lightning's loop over the same metrics.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import torch
from torch import nn

from vaetrain.data.decoding.pixels import PixelFormat
from vaetrain.data.sample_sets import pixels_of
from vaetrain.evaluation.metrics import ReconstructionMetrics
from vaetrain.evaluation.reconstruct import TilingConfig, encode_decode
from vaetrain.evaluation.stream import autocast, streamed_encode_decode
from vaetrain.evaluation.temporal import CAUSAL_CHUNK
from vaetrain.frames import as_frames, is_clip
from vaetrain.models.families import Posterior, family_of

Pairs = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor, Posterior | None]]
"""images in [-1, 1] -> (the reference they are compared with, the reconstruction, the posterior or None)."""


@dataclass
class Measured:
    """What one pass measured: the metrics' values (empty when no image was usable), the images measured
    and the files left out with their reasons."""

    values: dict[str, float | None] = field(default_factory=dict)
    images: int = 0
    bad_files: list[tuple[str, str]] = field(default_factory=list)
    fid_reference: dict | None = None  # the originals' Inception statistics (with rFID)


def with_progress(items: Iterable, label: str | None):
    """`items` with a progress bar and time estimate on a terminal (none in logs, none without a label)."""
    if label is None:
        return items
    from tqdm import tqdm

    return tqdm(items, desc=label, unit="batch", file=sys.stderr, disable=None, mininterval=1.0, leave=False)


def autoencoder_pairs(model: nn.Module, tiling: TilingConfig | None = None, precision: str = "32") -> Pairs:
    """Each image against the model's reconstruction of it (tiled when larger than `tiling.tile_size`; None:
    never tiled), in `precision` ("32", or "bf16" autocast); clips of a family that streams go through it
    chunk by chunk (`evaluation.stream`: the same reconstruction, in the memory of one chunk)."""
    streamed = family_of(model).chunks(model) is not None

    def pairs(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, Posterior | None]:
        if streamed and is_clip(images):
            posterior, reconstruction = streamed_encode_decode(model, images, tiling, precision)
        else:
            with autocast(images.device, precision):
                posterior, reconstruction = encode_decode(model, images, tiling)
        return images, reconstruction.float(), posterior

    return pairs


@torch.no_grad()
def measure(
    batches: Iterable,
    pairs: Pairs,
    *,
    pixels: PixelFormat | None = None,
    ms_ssim: bool = False,
    fid_features: nn.Module | None = None,
    lpips: nn.Module | None = None,
    fid_reference: dict | None = None,
    fvd_features: nn.Module | None = None,
    frame_chunk: int = CAUSAL_CHUNK,
    device: torch.device | str = "cpu",
    each: Callable[[torch.Tensor, torch.Tensor, Posterior | None], None] | None = None,
    progress: str | None = None,
) -> Measured:
    """Every batch (a loader's dict, whose bad files are collected, or a tensor) through `pairs` into
    `ReconstructionMetrics` in the units of `pixels` (PSNR, SSIM; MS-SSIM when asked; rFID with
    `fid_features`, rFVD of clips with `fvd_features`; LPIPS with `lpips`; clips' PSNR by chunks of `frame_chunk`
    frames), on this process's images alone; `each(images, reconstruction,
    posterior)` sees every batch too (latent statistics, report samples, timing)."""
    metrics = ReconstructionMetrics(
        ms_ssim=ms_ssim,
        fid_features=fid_features,
        sync_on_compute=False,
        pixels=pixels,
        fid_reference=fid_reference,
        fvd_features=fvd_features,
        frame_chunk=frame_chunk,
    )
    metrics = metrics.to(device)
    measured = Measured()
    for batch in with_progress(batches, progress):
        if isinstance(batch, dict):
            measured.bad_files += batch["bad"]
        images = pixels_of(batch).to(device)
        if len(images) == 0:  # only bad files in this batch
            continue
        reference, reconstruction, posterior = pairs(images)
        distances = lpips(as_frames(reconstruction.float().clamp(-1, 1)), as_frames(reference.float())) if lpips is not None else None
        metrics.update(reference, reconstruction, distances)
        if each is not None:
            each(images, reconstruction, posterior)
        measured.images += len(images)
    if measured.images:
        measured.values, measured.fid_reference = metrics.compute(), metrics.fid_reference()
    return measured
