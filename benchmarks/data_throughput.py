"""Decode + augment throughput per worker (one core), vaetrain's pipeline against a torchvision baseline.

    .venv/bin/python benchmarks/data_throughput.py [--images ../shared/data/clothing] [--resolution 256]

Both read the same JPEG files in the same order in one process with one thread (the work of one loader
worker), interleaved over several rounds; the best round of each is reported as one JSON line.
Baseline: `torchvision.datasets.ImageFolder` + RandomResizedCrop + flip + ToTensor + Normalize.
vaetrain: `SampleDataModule` training samples (robust decode, draft mode, resize_crop or random_crop,
flip, [-1, 1] float tensor).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch
from torchvision import datasets, transforms

from harness import machine
from vaetrain.data import SampleDataModule


def baseline_dataset(folder: Path, resolution: int, link_root: Path) -> datasets.ImageFolder:
    (link_root / "images").symlink_to(folder.resolve(), target_is_directory=True)  # ImageFolder wants class folders
    transform = transforms.Compose(
        [transforms.RandomResizedCrop(resolution), transforms.RandomHorizontalFlip(), transforms.ToTensor(), transforms.Normalize([0.5] * 3, [0.5] * 3)]
    )
    return datasets.ImageFolder(str(link_root), transform=transform)


def images_per_second(get_item, count: int) -> float:
    start = time.perf_counter()
    for i in range(count):
        get_item(i)
    return count / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", default=str(Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "clothing"))
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--count", type=int, default=200, help="images per round")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    folder = Path(args.images)
    if not folder.is_dir():
        sys.exit(f"benchmark data not found at {folder} (the shared/ folder beside the checkout)")
    torch.set_num_threads(1)

    pipelines = {}
    with tempfile.TemporaryDirectory() as link_root:
        baseline = baseline_dataset(folder, args.resolution, Path(link_root))
        pipelines["torchvision_imagefolder_randomresizedcrop"] = lambda i: baseline[i % len(baseline)]
        for crop in ("resize_crop", "random_crop"):
            module = SampleDataModule(path=str(folder), resolution=args.resolution, crop=crop, val_size=1, num_workers=0)
            dataset = module.samples("train", train=True)
            pipelines[f"vaetrain_{crop}"] = lambda i, d=dataset: d[i % len(d)]
        for get_item in pipelines.values():  # warm the page cache and the code paths
            images_per_second(get_item, 20)
        best = {name: 0.0 for name in pipelines}
        for _ in range(args.rounds):
            for name, get_item in pipelines.items():
                best[name] = max(best[name], images_per_second(get_item, args.count))

    baseline_rate = best["torchvision_imagefolder_randomresizedcrop"]
    print(
        json.dumps(
            {
                "benchmark": "data_throughput",
                "resolution": args.resolution,
                "images": str(folder),
                "images_per_round": args.count,
                "img_per_s_per_worker": {name: round(rate, 1) for name, rate in best.items()},
                "speedup_vs_baseline": {name: round(rate / baseline_rate, 2) for name, rate in best.items()},
                "machine": machine(),
            }
        )
    )


if __name__ == "__main__":
    main()
