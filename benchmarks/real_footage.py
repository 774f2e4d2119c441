"""Real footage for the video race (benchmarks/videos/, SOURCES.md there): whole scenes split into training
and held-out ones, written as lossless frame folders at the evaluation's scale, and the per-chunk view of a
model's held-out reconstructions (PSNR by latent chunk and the temporal drift).

Chunks are those of a causal video VAE with 4x temporal compression: chunk 1 is frame 1, chunk k >= 2 is frames
4k-6 .. 4k-3 (1-based); drift is the mean PSNR of chunks 3 .. last minus chunk 2's, in dB (negative: later
chunks are reconstructed worse than the second). Both are the evaluation's own (`vaetrain.evaluation.temporal`,
through `measure`), as `eval` writes them to metrics.json.
"""

from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image

from vaetrain.data.decoding.video import VIDEO_TYPES, ClipSpec, read_clip, read_video
from vaetrain.evaluation.measure import autoencoder_pairs, measure
from vaetrain.evaluation.temporal import frame_chunk_of

HOLDOUT = ("coffee", "dog")
"""The scenes never trained on (file stems in benchmarks/videos/)."""


def split_scenes(folder: Path, holdout: tuple[str, ...] = HOLDOUT) -> tuple[list[Path], list[Path]]:
    """The folder's videos sorted by name: (training scenes, held-out scenes); every held-out name must exist."""
    videos = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower().lstrip(".") in VIDEO_TYPES)
    missing = sorted(set(holdout) - {p.stem for p in videos})
    if missing:
        raise SystemExit(f"real_footage: held-out scene(s) {', '.join(missing)} not found in {folder}")
    train, held = [p for p in videos if p.stem not in holdout], [p for p in videos if p.stem in holdout]
    if not train:
        raise SystemExit(f"real_footage: {folder} has no training scene beside the held-out ones")
    return train, held


def _short_side(frame: torch.Tensor, side: int) -> Image.Image:
    image = Image.fromarray(frame.permute(1, 2, 0).numpy())
    scale = side / min(image.size)
    return image.resize((max(side, round(image.width * scale)), max(side, round(image.height * scale))), Image.Resampling.BICUBIC)


def _centre_square(image: Image.Image, side: int) -> Image.Image:
    left, top = (image.width - side) // 2, (image.height - side) // 2
    return image.crop((left, top, left + side, top + side))


def prepare(folder: Path, out: Path, holdout: tuple[str, ...], *, side: int = 64, eval_frames: int = 33) -> tuple[Path, Path]:
    """OUT/train/<scene>/NNN.png: every frame of each training scene, short side scaled to `side` (random
    crops of it are training crops at the evaluation's scale); OUT/holdout/<scene>_<k>/NNN.png: each held-out
    scene cut into consecutive clips of `eval_frames` frames (the rest dropped), scaled and centre-cropped to
    side x side. Skipped where already written."""
    train_scenes, held_scenes = split_scenes(folder, holdout)
    train, held = out / "train", out / "holdout"
    for video in train_scenes:
        target = train / video.stem
        if not (target / "done").is_file():
            target.mkdir(parents=True, exist_ok=True)
            for index, frame in enumerate(read_video(video)[0]):
                _short_side(frame, side).save(target / f"{index:04d}.png")
            (target / "done").write_text("")
    for video in held_scenes:
        frames = read_video(video)[0]
        for clip in range(len(frames) // eval_frames):
            target = held / f"{video.stem}_{clip}"
            if (target / f"{eval_frames - 1:03d}.png").is_file():
                continue
            target.mkdir(parents=True, exist_ok=True)
            for index in range(eval_frames):
                _centre_square(_short_side(frames[clip * eval_frames + index], side), side).save(target / f"{index:03d}.png")
    return train, held


def evaluate_clips(model: torch.nn.Module, held: Path, frames: int, batch_size: int = 4) -> dict:
    """The held-out clips (their first `frames` frames) through the one measuring loop: PSNR, SSIM, flicker,
    and the per-chunk PSNR and drift from the same reconstructions."""
    folders = sorted(p for p in held.iterdir() if p.is_dir())
    clips = [read_clip(folder, ClipSpec(frames), random_start=False).permute(1, 0, 2, 3).float() / 127.5 - 1 for folder in folders]
    batches = [torch.stack(clips[i : i + batch_size]) for i in range(0, len(clips), batch_size)]
    measured = measure(batches, autoencoder_pairs(model), frame_chunk=frame_chunk_of(model)).values
    chunks = [measured[f"psnr_chunk{k}"] for k in range(1, 1 + sum(key.startswith("psnr_chunk") for key in measured))]
    return {**measured, "clips": len(clips), "chunks": chunks, "drift": measured["temporal_drift"]}
