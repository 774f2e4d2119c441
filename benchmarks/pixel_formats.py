"""Decode + crop throughput per loader worker (one core) for each pixel format, against the 8-bit RGB path.

    .venv/bin/python benchmarks/pixel_formats.py [--size 512] [--resolution 256] [--count 100]

Formats: 8-bit RGB PNG (the fast uint8 path), 16-bit grayscale PNG, 6- and 13-band uint16 TIFF (planar),
6-band uint16 .npy; synthetic images of the same side written to a temporary folder (tests' generators),
read by `SampleDataModule` training samples (random crop, flip, normalisation; percentile normalisation
for the 16-bit formats, bounds measured first and not timed). Each format's best of `--rounds` rounds,
one JSON line, with each rate as a ratio to the 8-bit RGB rate measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from harness import machine
from vaetrain.data import SampleDataModule

from fixtures.synthetic import ct_slice, multispectral


def write(folder: Path, kind: str, count: int, size: int) -> dict:
    """Writes `count` images of `kind`; returns the data module settings that read them."""
    folder.mkdir(parents=True)
    for i in range(count):
        if kind == "rgb8_png":
            cube = multispectral(3, size, seed=i)
            Image.fromarray((np.moveaxis(cube, 0, -1) >> 8).astype(np.uint8)).save(folder / f"{i:04d}.png")
        elif kind == "gray16_png":
            Image.fromarray(ct_slice(size, seed=i)).save(folder / f"{i:04d}.png")
        elif kind.endswith("_tiff"):
            import tifffile

            bands = int(kind.split("band")[0].split("_")[-1])
            tifffile.imwrite(folder / f"{i:04d}.tif", multispectral(bands, size, seed=i), photometric="minisblack", planarconfig="separate")
        else:
            np.save(folder / f"{i:04d}.npy", multispectral(6, size, seed=i))
    if kind == "rgb8_png":
        return {}
    channels = 1 if kind == "gray16_png" else (13 if "13band" in kind else 6)
    return {"channels": channels, "bit_depth": 16, "normalization": "percentile", "normalization_images": 16}


def rate(data: SampleDataModule, count: int) -> float:
    samples = data.samples("train", train=True)
    start = time.perf_counter()
    for i in range(count):
        samples[i % len(samples)]
    return count / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512, help="side of the generated images")
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--count", type=int, default=100, help="images per format and round")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    kinds = ("rgb8_png", "gray16_png", "6band_tiff", "13band_tiff", "6band_npy")
    with tempfile.TemporaryDirectory() as root:
        modules = {}
        for kind in kinds:
            settings = write(Path(root) / kind, kind, args.count, args.size)
            modules[kind] = SampleDataModule(path=str(Path(root) / kind), resolution=args.resolution, val_size=0, num_workers=0, **settings)
            modules[kind].prepare_split()  # lists the files, measures percentile bounds
        best = {kind: 0.0 for kind in kinds}
        for _ in range(args.rounds):  # interleaved, so a slower stretch of the machine hits every format
            for kind in kinds:
                best[kind] = max(best[kind], rate(modules[kind], args.count))
    print(
        json.dumps(
            {
                "benchmark": "pixel_formats",
                "machine": machine(),
                "threads": 1,
                "image_side": args.size,
                "crop": args.resolution,
                "img_per_s": {k: round(v, 1) for k, v in best.items()},
                "ratio_to_rgb8": {k: round(v / best["rgb8_png"], 3) for k, v in best.items()},
            }
        )
    )


if __name__ == "__main__":
    main()
