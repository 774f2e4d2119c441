"""Synthetic but realistic images beyond 8-bit RGB, generated (no downloads; tests, benchmarks and smoke runs use them):

- `ct_slice`: a 16-bit single-channel "CT slice": an elliptical body with organs and bone, 12-bit-like
  values spread over the 16-bit range, smooth structure plus noise (radiology PNGs are stored like this).
- `multispectral`: N uint16 "satellite" bands: a shared smooth landscape (fields, water, a road) seen with
  a different reflectance per band, plus sensor noise (GeoTIFF-like, planar band-first).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import png
import tifffile
from PIL import Image


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    axis = np.linspace(-1, 1, size)
    return np.meshgrid(axis, axis, indexing="ij")


def ct_slice(size: int = 64, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y, x = _grid(size)
    image = np.full((size, size), 1000.0)  # air
    body = (x / 0.85) ** 2 + (y / 0.7) ** 2 < 1
    image[body] = 30000 + 2000 * rng.standard_normal()
    for _ in range(3):  # organs
        cx, cy, r = rng.uniform(-0.4, 0.4), rng.uniform(-0.3, 0.3), rng.uniform(0.1, 0.25)
        image[(x - cx) ** 2 + (y - cy) ** 2 < r**2] = rng.uniform(33000, 40000)
    spine = (x**2 + (y - 0.45) ** 2) < 0.08**2
    image[spine] = 60000  # bone
    image += rng.normal(0, 400, image.shape)
    return np.clip(image, 0, 65535).astype(np.uint16)


def multispectral(bands: int = 6, size: int = 64, seed: int = 0) -> np.ndarray:
    """(bands, size, size) uint16."""
    rng = np.random.default_rng(seed)
    y, x = _grid(size)
    land = (np.sin(3 * x + rng.uniform(0, 6)) * np.cos(2 * y + rng.uniform(0, 6)) > 0).astype(float)
    water = ((x - rng.uniform(-0.5, 0.5)) ** 2 + (y - 0.5) ** 2) < 0.15
    road = np.abs(y - 0.3 * x - rng.uniform(-0.3, 0.3)) < 0.04
    reflectance = rng.uniform(0.2, 0.8, size=(bands, 3))  # per band: field A, field B, water
    cube = np.empty((bands, size, size))
    for band in range(bands):
        a, b, w = reflectance[band]
        layer = np.where(land > 0, a, b) * 20000 + 3000 * np.sin(5 * x + band)
        layer[water] = w * 5000
        layer[road] = 45000
        cube[band] = layer + rng.normal(0, 300, layer.shape)
    return np.clip(cube, 0, 65535).astype(np.uint16)


def write_ct_pngs(folder: Path, count: int, size: int = 64) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"slice_{i:03d}.png" for i in range(count)]
    for i, path in enumerate(paths):
        Image.fromarray(ct_slice(size, seed=i)).save(path)
    return paths


def write_multiband_tiffs(folder: Path, count: int, bands: int = 6, size: int = 64, planar: bool = True) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"tile_{i:03d}.tif" for i in range(count)]
    for i, path in enumerate(paths):
        cube = multispectral(bands, size, seed=i)
        if planar:
            tifffile.imwrite(path, cube, photometric="minisblack", planarconfig="separate")
        else:
            tifffile.imwrite(path, np.moveaxis(cube, 0, -1), photometric="minisblack", planarconfig="contig")
    return paths


def write_rgb16_png(path: Path, array: np.ndarray) -> None:
    """(H, W, 3) uint16 as a 48-bit PNG (pypng; Pillow cannot write these)."""
    height, width, _ = array.shape
    with path.open("wb") as handle:
        png.Writer(width, height, greyscale=False, bitdepth=16).write(handle, array.reshape(height, width * 3).tolist())
