"""Reconstructing images of any size (padding to the downsampling factor, tiling for very large images),
and `reconstruct_files`, what `vaetrain recon` does with image files and folders (videos, for a video
family: mp4 files out).

Tiling is diffusers' (`AutoencoderKL.enable_tiling`): overlapping tiles, encoded and decoded separately,
blended linearly across the overlap so that no seam shows (tests/evaluation/test_reconstruct.py measures
it). Its tile size comes from the model's `sample_size` by default; here it is set explicitly.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vaetrain.data.decoding.decode import BadImage
from vaetrain.data.decoding.pixels import PixelFormat
from vaetrain.data.decoding.samples import build_decoder
from vaetrain.data.decoding.video import read_video, write_video
from vaetrain.data.sources.folders import list_images
from vaetrain.errors import ConfigError
from vaetrain.evaluation.progress import Bar, Progress, bar, counting_calls
from vaetrain.frames import as_clips, as_frames, is_clip
from vaetrain.models.families import decode, downsampling_factor, encode, family_of

SEPARATOR_PX = 4


@dataclass
class TilingConfig:
    """Images with a side above `tile_size` pixels are processed in `tile_size` tiles that overlap by
    `overlap` of their side. `tile_size` must be divisible by the downsampling factor."""

    tile_size: int = 512
    overlap: float = 0.25
    enabled: bool = True


def pad_to_multiple(images: torch.Tensor, factor: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """Pads bottom/right by reflection (replicate where the image is too small to reflect) so both sides
    divide by `factor`; returns the original (height, width) to crop back to."""
    height, width = images.shape[-2:]
    pad_h, pad_w = (-height) % factor, (-width) % factor
    if pad_h == 0 and pad_w == 0:
        return images, (height, width)
    mode = "reflect" if pad_h < height and pad_w < width else "replicate"
    padding = (0, pad_w, 0, pad_h) + (0, 0) * (images.ndim - 4)  # clips: not in time
    return F.pad(images, padding, mode=mode), (height, width)


@contextmanager
def tiled(model: nn.Module, config: TilingConfig | None):
    """Switches diffusers' tiling on with the given tile size for the duration, then restores the model."""
    if config is None or not config.enabled:
        yield model
        return
    factor = downsampling_factor(model)
    if config.tile_size % factor:
        raise ValueError(f"tile_size={config.tile_size} is not divisible by the downsampling factor {factor}")
    names = _TILE_ATTRIBUTES.get(type(model).__name__)
    if names is None:  # AutoencoderTiny tiles every image once tiling is on, however small: it runs whole
        yield model
        return
    saved = {name: getattr(model, name) for name in names}
    side, latent_side = config.tile_size, config.tile_size // factor
    stride = max(factor, round(side * (1 - config.overlap)) // factor * factor)
    if "tile_sample_min_size" in names:  # AutoencoderKL: one size and an overlap factor
        values = (True, side, latent_side, config.overlap)
    else:  # AutoencoderDC: sizes and strides per axis
        values = (True, side, side, stride, stride, latent_side, latent_side)
    for name, value in zip(names, values):
        setattr(model, name, value)
    try:
        yield model
    finally:
        for name, value in saved.items():
            setattr(model, name, value)


_TILE_ATTRIBUTES = {
    "AutoencoderKL": ("use_tiling", "tile_sample_min_size", "tile_latent_min_size", "tile_overlap_factor"),
    "AutoencoderKLWan": ("use_tiling", "tile_sample_min_height", "tile_sample_min_width", "tile_sample_stride_height", "tile_sample_stride_width"),
    "AutoencoderDC": (
        "use_tiling",
        "tile_sample_min_height",
        "tile_sample_min_width",
        "tile_sample_stride_height",
        "tile_sample_stride_width",
        "tile_latent_min_height",
        "tile_latent_min_width",
    ),
}


@torch.no_grad()
def encode_decode(model: nn.Module, images: torch.Tensor, tiling: TilingConfig | None = None):
    """(posterior, reconstruction) for images of any size: padded to the downsampling factor, decoded
    from the posterior mode, cropped back to the input's size, in [-1, 1] as the model gives it. Clips
    given to an image autoencoder are reconstructed frame by frame (the posterior is then per frame)."""
    if is_clip(images) and not family_of(model).video:
        posterior, decoded = encode_decode(model, as_frames(images), tiling)
        return posterior, as_clips(decoded, images.shape[2])
    height, width = images.shape[-2:]
    padded, _ = pad_to_multiple(images, downsampling_factor(model))
    with tiled(model, tiling):
        posterior = encode(model, padded)
        decoded = decode(model, posterior.mode())
    return posterior, decoded[..., :height, :width]


def reconstruct(model: nn.Module, images: torch.Tensor, tiling: TilingConfig | None = None) -> torch.Tensor:
    return encode_decode(model, images, tiling)[1]


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def reconstruct_files(
    model: nn.Module,
    inputs: list[str],
    out_dir: str | Path,
    *,
    side_by_side: bool = False,
    tiling: TilingConfig | None = None,
    device: str = "auto",
    pixels: PixelFormat | None = None,
    progress: Progress = bar,
) -> tuple[int, list[tuple[str, str]]]:
    """Writes OUT/<name>.png for each image, at its own size (a folder keeps its layout below OUT; a file
    keeps its name), optionally input | reconstruction; returns how many were written and the unusable
    files with their reasons. Images read as `pixels` (the model's training format); other than 8-bit RGB,
    the reconstruction is OUT/<name>.tif in the data's own units and dtype (channels first), and the
    side-by-side picture OUT/<name>.png shows the display channels. `progress` shows the files done (and a
    video's chunks) with an estimate, on stderr."""
    pixels = pixels or PixelFormat()
    video = family_of(model).video
    pairs = _inputs(inputs, videos=video)
    target = resolve_device(device)
    model = model.to(target)
    files = progress(len(pairs), "recon", "video" if video else "image")
    try:
        if video:
            return reconstruct_videos(model, pairs, Path(out_dir), side_by_side=side_by_side, tiling=tiling, device=target, progress=progress, files=files)
        return _reconstruct_images(model, pairs, Path(out_dir), side_by_side=side_by_side, tiling=tiling, device=target, pixels=pixels, files=files)
    finally:
        files.close()


def _reconstruct_images(model, pairs, out_dir: Path, *, side_by_side: bool, tiling, device, pixels: PixelFormat, files) -> tuple[int, list]:
    from torchvision.utils import save_image

    target, decoder = device, build_decoder("native", pixels=pixels)
    written, bad = 0, []
    for file, relative in pairs:
        sample = decoder(file, str(file))
        files.update(1)
        if sample["pixels"] is None:
            bad += sample["bad"]
            continue
        image = sample["pixels"].unsqueeze(0).to(target)
        picture = reconstruct(model, image, tiling).float().clamp(-1, 1)
        path = out_dir / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        if not pixels.is_rgb8:
            _write_raw(pixels, picture[0], path.with_suffix(".tif"))
        if side_by_side:
            gap = torch.ones(1, 3, image.shape[2], SEPARATOR_PX, device=target)
            save_image(torch.cat([pixels.to_display(image), gap, pixels.to_display(picture)], dim=3), path)
        elif pixels.is_rgb8:
            save_image((picture + 1) / 2, path)
        written += 1
    return written, bad


def _write_raw(pixels: PixelFormat, image: torch.Tensor, path: Path) -> None:
    import tifffile

    dtype = np.uint8 if pixels.bit_depth == 8 else np.uint16
    raw = pixels.denormalise(image).round().cpu().numpy().astype(dtype)
    tifffile.imwrite(path, raw, photometric="minisblack", planarconfig="separate")


def reconstruct_videos(
    model: nn.Module, pairs, out_dir: Path, *, side_by_side: bool, tiling: TilingConfig | None, device, progress: Progress, files: Bar
) -> tuple[int, list]:
    """OUT/<name>.mp4 per video at its own size and frame rate (optionally input | reconstruction): the
    frames padded to 1 + ck with the last one repeated (c: the family's causal chunk), then cut back. Each
    video's encoder and decoder calls (diffusers' chunks and tiles) advance a bar of its own; `files` counts
    the videos done."""
    family = family_of(model)
    written, bad, chunk = 0, [], family.frame_chunk(model)
    for file, relative in pairs:
        try:
            frames, rate = read_video(file)
        except BadImage as error:
            bad.append((str(file), str(error)))
            files.update(1)
            continue
        count = frames.shape[0]
        padded = torch.cat([frames, frames[-1:].expand((-count + 1) % chunk, -1, -1, -1)])
        clip = (padded.permute(1, 0, 2, 3).unsqueeze(0).float() / 127.5 - 1).to(device)
        clip, (height, width) = pad_to_multiple(clip, downsampling_factor(model))
        with tiled(model, tiling):
            chunks = progress(family.coder_calls(model, tuple(clip.shape)), f"{relative} ({count} frames)", "chunk")
            try:
                with counting_calls([model.encoder, model.decoder], chunks):
                    picture = reconstruct(model, clip).float().clamp(-1, 1)[:, :, :count, :height, :width]
            finally:
                chunks.close()
        clip = clip[..., :height, :width]
        files.update(1)
        shown = torch.cat([clip[:, :, :count], picture], dim=-1) if side_by_side else picture
        out = ((shown[0].permute(1, 2, 3, 0) + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).cpu().numpy()
        write_video(out_dir / relative, list(out), fps=max(1, round(rate)))
        written += 1
    return written, bad


def _inputs(paths: list[str], videos: bool = False) -> list[tuple[Path, Path]]:
    """(file, output path relative to OUT)."""
    pairs, suffix = [], ".mp4" if videos else ".png"
    for entry in paths:
        path = Path(entry).expanduser()
        if path.is_dir():
            pairs += [(file, file.relative_to(path).with_suffix(suffix)) for file in list_images(path, videos)]
        elif path.is_file():
            pairs.append((path, Path(path.name).with_suffix(suffix)))
        else:
            raise ConfigError(f"recon: input '{path}' does not exist")
    return pairs
