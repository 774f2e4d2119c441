"""Videos made from real photographs by a moving camera (no downloads; tests, benchmarks and smoke runs use
them when no real footage is at hand): a square window pans across the photo, zooms and rotates a little,
and a gray occluder crosses it, so consecutive frames differ as real footage does (motion, parallax-free
but with disocclusion), and a reconstruction that flickers is measurable.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from vaetrain.data.decoding.video import write_video


def camera_frames(photo: Image.Image, frames: int, size: int, *, seed: int = 0) -> list[np.ndarray]:
    """`frames` uint8 (size, size, 3) frames of one camera path over `photo` (its short side must be at
    least 1.5 x size: the window moves inside it)."""
    rng = np.random.default_rng(seed)
    photo = photo.convert("RGB")
    width, height = photo.size
    window = min(width, height) / 1.5
    x0, y0 = rng.uniform(0, width - window * 1.3), rng.uniform(0, height - window * 1.3)
    dx, dy = rng.uniform(-0.3, 0.3, 2) * window / max(frames - 1, 1)
    zoom, turn = rng.uniform(-0.15, 0.15), rng.uniform(-6, 6)
    occluder_y, occluder_speed = rng.uniform(0.2, 0.8) * size, rng.uniform(0.5, 1.5) * size / max(frames - 1, 1)
    out = []
    for t in range(frames):
        side = window * (1 + zoom * t / max(frames - 1, 1))
        cx, cy = x0 + window * 0.65 + dx * t, y0 + window * 0.65 + dy * t
        cx, cy = min(max(cx, side / 2), width - side / 2), min(max(cy, side / 2), height - side / 2)
        crop = photo.rotate(turn * t / max(frames - 1, 1), center=(cx, cy), resample=Image.BILINEAR)
        crop = crop.crop((round(cx - side / 2), round(cy - side / 2), round(cx + side / 2), round(cy + side / 2)))
        frame = np.asarray(crop.resize((size, size), Image.BICUBIC)).copy()
        left = int(-size / 4 + occluder_speed * t)
        top = int(occluder_y)
        frame[max(top - size // 10, 0) : top + size // 10, max(left, 0) : max(left + size // 4, 0)] = 128
        out.append(frame)
    return out


def write_camera_videos(photos: list[Path], folder: str | Path, *, frames: int, size: int, fps: int = 8, codec: str = "mpeg4") -> list[Path]:
    """One mp4 per photo, each with its own camera path (seeded by its position)."""
    folder = Path(folder)
    return [write_video(folder / f"{Path(p).stem}.mp4", camera_frames(Image.open(p), frames, size, seed=i), fps=fps, codec=codec) for i, p in enumerate(photos)]
