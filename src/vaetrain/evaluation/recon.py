"""What `vaetrain recon` does with files and folders: images to PNG (or TIFF in the data's own units),
videos to mp4 at their own size and frame rate, optionally input | reconstruction side by side, with a
progress bar and estimate over the files and over each video's chunks.

Videos of a family that streams (Wan) are read, reconstructed and written chunk by chunk
(`evaluation.stream`): memory does not grow with their length. HunyuanVideo's and LTX-Video's are read whole
(their classes have no caches to carry between chunks; `recon` says so once) and reconstructed in one pass with
diffusers' temporal tiling. A model that records the longest clip it trained on warns once of a longer video.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn

from vaetrain.data.decoding.decode import BadImage
from vaetrain.data.decoding.pixels import PixelFormat
from vaetrain.data.decoding.samples import build_decoder
from vaetrain.data.decoding.video import read_video, video_frames
from vaetrain.data.decoding.video_writer import VideoWriter, write_video
from vaetrain.data.sources.folders import list_images
from vaetrain.errors import ConfigError
from vaetrain.evaluation.progress import Bar, Progress, bar, counting_calls
from vaetrain.evaluation.reconstruct import TilingConfig, pad_to_multiple, reconstruct, resolve_device, tiled
from vaetrain.evaluation.stream import ChunkedReconstruction, autocast, frame_groups, warn_if_longer
from vaetrain.models.families import downsampling_factor, family_of

SEPARATOR_PX = 4


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
    precision: str = "32",
    longest_clip: int | None = None,
) -> tuple[int, list[tuple[str, str]]]:
    """Writes OUT/<name>.png for each image, at its own size (a folder keeps its layout below OUT; a file
    keeps its name), optionally input | reconstruction; returns how many were written and the unusable
    files with their reasons. Images read as `pixels` (the model's training format); other than 8-bit RGB,
    the reconstruction is OUT/<name>.tif in the data's own units and dtype (channels first), and the
    side-by-side picture OUT/<name>.png shows the display channels. `progress` shows the files done (and a
    video's chunks) with an estimate, on stderr. `precision`: "32" or "bf16" (autocast); `longest_clip`: the
    longest clip the model trained on (a longer video is warned of, once)."""
    pixels = pixels or PixelFormat()
    video = family_of(model).video
    pairs = _inputs(inputs, videos=video)
    target = resolve_device(device)
    model = model.to(target)
    if video and pairs and family_of(model).chunks(model) is None:  # said before any bar is drawn
        print(f"vaetrain recon: {type(model).__name__} is not streamed (no causal caches to carry between chunks): each video is read whole", file=sys.stderr)
    files = progress(len(pairs), "recon", "video" if video else "image")
    try:
        if video:
            settings = dict(side_by_side=side_by_side, tiling=tiling, device=target, precision=precision, longest_clip=longest_clip)
            return reconstruct_videos(model, pairs, Path(out_dir), progress=progress, files=files, **settings)
        with autocast(target, precision):
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
    model: nn.Module,
    pairs,
    out_dir: Path,
    *,
    side_by_side: bool,
    tiling: TilingConfig | None,
    device,
    progress: Progress,
    files: Bar,
    precision: str = "32",
    longest_clip: int | None = None,
) -> tuple[int, list]:
    """OUT/<name>.mp4 per video at its own size and frame rate (optionally input | reconstruction), streamed
    where the family streams (`stream_video`), else read whole (`_whole_video`). Each video's encoder and
    decoder calls (chunks and tiles) advance a bar of its own; `files` counts the videos done."""
    written, bad, warned = 0, [], False
    streamed = family_of(model).chunks(model) is not None
    for file, relative in pairs:
        settings = dict(side_by_side=side_by_side, tiling=tiling, device=device, precision=precision, progress=progress, label=str(relative))
        try:
            if streamed:
                warned |= stream_video(model, file, out_dir / relative, longest_clip=None if warned else longest_clip, **settings)[1]
            else:
                warned |= _whole_video(model, file, out_dir / relative, longest_clip=None if warned else longest_clip, **settings)
        except BadImage as error:
            bad.append((str(file), str(error)))
            files.update(1)
            continue
        files.update(1)
        written += 1
    return written, bad


def stream_video(
    model: nn.Module,
    path: Path,
    out: Path,
    *,
    side_by_side: bool,
    tiling: TilingConfig | None,
    device: torch.device,
    precision: str,
    progress: Progress,
    label: str,
    longest_clip: int | None = None,
) -> tuple[int, bool]:
    """Reconstructs the video at `path` into `out`, reading, computing and writing chunk by chunk (the first
    frame, then 4 at a time; a short last chunk filled up with its last frame and cut back), with a progress
    bar over the encoder's and decoder's calls. Returns the frames written and whether it warned of a video
    longer than `longest_clip`."""
    family, stream = family_of(model), ChunkedReconstruction(model, precision)
    chunk = family.frame_chunk(model)
    with video_frames(path) as video, tiled(model, tiling):
        frames = iter(video.frames)
        first = next(frames, None)
        if first is None:
            raise BadImage("no decodable frames")
        padded_count = 1 + -(-(max(video.count, 1) - 1) // chunk) * chunk
        shape = (1, first.shape[0], padded_count, *(side + (-side) % stream.factor for side in first.shape[-2:]))
        warned = warn_if_longer(video.count, longest_clip, str(path))
        chunks = progress(family.coder_calls(model, shape), f"{label} ({video.count} frames)", "chunk")
        written = 0
        try:
            with VideoWriter(out, fps=video.rate) as writer, counting_calls([model.encoder, model.decoder], chunks):
                for group, real in frame_groups(_chained(first, frames), chunk):
                    clip = (group.permute(1, 0, 2, 3).unsqueeze(0).float() / 127.5 - 1).to(device)
                    reconstruction = stream.step(clip)[1][:, :, :real].clamp(-1, 1)
                    shown = torch.cat([clip[:, :, :real], reconstruction], dim=-1) if side_by_side else reconstruction
                    for frame in _to_uint8_frames(shown):
                        writer.write(frame)
                    written += real
        finally:
            chunks.close()
    return written, warned


def _whole_video(model, file: Path, out: Path, *, side_by_side: bool, tiling, device, precision: str, progress: Progress, label: str, longest_clip) -> bool:
    """One pass over the whole video: its frames padded to 1 + ck with the last one repeated (c: the family's
    causal chunk), then cut back; whether it warned of a video longer than `longest_clip`."""
    family = family_of(model)
    frames, rate = read_video(file)
    count, chunk = frames.shape[0], family.frame_chunk(model)
    warned = warn_if_longer(count, longest_clip, str(file))
    padded = torch.cat([frames, frames[-1:].expand((-count + 1) % chunk, -1, -1, -1)])
    clip = (padded.permute(1, 0, 2, 3).unsqueeze(0).float() / 127.5 - 1).to(device)
    clip, (height, width) = pad_to_multiple(clip, downsampling_factor(model))
    with tiled(model, tiling):
        chunks = progress(family.coder_calls(model, tuple(clip.shape)), f"{label} ({count} frames)", "chunk")
        try:
            with counting_calls([model.encoder, model.decoder], chunks), autocast(device, precision):
                picture = reconstruct(model, clip).float().clamp(-1, 1)[:, :, :count, :height, :width]
        finally:
            chunks.close()
    clip = clip[..., :height, :width]
    shown = torch.cat([clip[:, :, :count], picture], dim=-1) if side_by_side else picture
    write_video(out, list(_to_uint8_frames(shown)), fps=rate)
    return warned


def _to_uint8_frames(clips: torch.Tensor) -> np.ndarray:
    """(1, C, T, H, W) in [-1, 1] -> (T, H, W, C) uint8."""
    return ((clips[0].permute(1, 2, 3, 0) + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).cpu().numpy()


def _chained(first: torch.Tensor, rest):
    yield first
    yield from rest


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
