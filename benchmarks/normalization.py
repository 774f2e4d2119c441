"""Fixed-range against percentile normalisation on 12-bit data stored in 16-bit files (how CT scanners write).

    .venv/bin/python benchmarks/normalization.py [--steps 600] [--images 600] [--out runs/normalization]

Generates `--images` synthetic CT slices (tests' generator, 64 px, values 0..~3800 in uint16 PNG), sorted by
name: the last 100 are held out. Each variant trains the tiny preset (1 channel, L1 + KL + adaptive PatchGAN,
no LPIPS) for the same number of generator steps on the rest, then `vaetrain eval` measures the held-out
slices with the format its checkpoint recorded. PSNR is in the data's own units with 65535 as the peak (the
bit depth's), so 12-bit data reads ~24 dB higher than against 4095; the comparison between variants is what
counts. `vaetrain eval` compares with the *normalised* targets, which percentile normalisation clips to its
bounds; `psnr_vs_raw_files` compares the denormalised reconstructions with the files' own values, so what a
normalisation clips away counts as error too (and `clip_only_psnr` is the error of clipping alone).
`--eval-only` re-measures existing runs. Prints one JSON line and writes OUT/results.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from PIL import Image

from harness import ROOT, machine, vaetrain
from vaetrain.checkpoints.references import load_autoencoder, recorded_pixel_format
from vaetrain.data.decoding.arrays import read_pixels
from vaetrain.data.decoding.pixels import PixelFormat
from vaetrain.evaluation.measure import measure
from vaetrain.evaluation.reconstruct import reconstruct

from fixtures.synthetic import ct_slice

VARIANTS = {
    "range_0_65535": [],  # the 16-bit default: the whole uint16 range -> [-1, 1]
    "percentile_0.5_99.5": ["--data.normalization=percentile"],
    "range_0_4095": ["--data.value_range=[0, 4095]"],  # the user states the scanner's 12 bits
}


def write_slices(folder: Path, count: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        path = folder / f"slice_{i:04d}.png"
        if not path.exists():
            Image.fromarray(ct_slice(64, seed=i) // 16).save(path)  # 12-bit values in a 16-bit file


@torch.no_grad()
def raw_psnr(checkpoint: Path, files: list[Path]) -> tuple[float, float]:
    """(mean PSNR of the reconstructions against the files' raw values, of clipping alone), peak 65535: both
    through the one measuring loop, in the units of the whole 16-bit range."""
    model, pixels = load_autoencoder(checkpoint), recorded_pixel_format(checkpoint)
    whole = PixelFormat(channels=pixels.channels, bit_depth=16)  # [0, 65535] -> [-1, 1]: PSNR at peak 65535
    low, high = (float(b.flatten()[0]) for b in pixels.bounds())
    raws = [read_pixels(file, pixels, 10**9).float()[None] for file in files]
    pairs = {
        "model": lambda raw: (whole.normalise(raw), whole.normalise(pixels.denormalise(reconstruct(model, pixels.normalise(raw)).float())), None),
        "clip": lambda raw: (whole.normalise(raw), whole.normalise(raw.clamp(low, high)), None),
    }
    return tuple(measure(raws, pair, pixels=whole).values["psnr"] for pair in pairs.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--images", type=int, default=600)
    parser.add_argument("--out", default=str(ROOT / "runs" / "normalization"))
    parser.add_argument("--eval-only", action="store_true", help="measure the runs already in OUT")
    args = parser.parse_args()
    out = Path(args.out)
    slices = out / "slices"
    write_slices(slices, args.images)
    names = sorted(p.name for p in slices.glob("*.png"))
    (out / "train.txt").write_text("\n".join(names[:-100]) + "\n")
    (out / "held_out.txt").write_text("\n".join(names[-100:]) + "\n")
    results = {}
    for name, extra in VARIANTS.items():
        run = out / name
        start = time.perf_counter()
        if not args.eval_only:
            vaetrain(
                "fit",
                "--config",
                str(ROOT / "configs" / "tiny.yaml"),
                f"--data.path={slices}",
                f"--data.file_list={out / 'train.txt'}",
                "--data.channels=1",
                "--data.bit_depth=16",
                "--data.val_size=8",
                "--model.autoencoder.in_channels=1",
                "--model.autoencoder.out_channels=1",
                f"--trainer.max_steps={args.steps}",
                "--trainer.enable_progress_bar=false",
                f"--trainer.default_root_dir={run}",
                *extra,
            )
        seconds = time.perf_counter() - start if not args.eval_only else None
        vaetrain(
            "eval",
            str(run / "checkpoints" / "last.ckpt"),
            f"--data.path={slices}",
            f"--data.file_list={out / 'held_out.txt'}",
            "--data.resolution=64",
            "--metrics=psnr,ssim",
            f"--out={run / 'eval'}",
        )
        (row,) = json.loads((run / "eval" / "metrics.json").read_text())
        vs_raw, clip_only = raw_psnr(run / "checkpoints" / "last.ckpt", [slices / n for n in names[-100:]])
        results[name] = {
            "psnr_peak_65535": round(row["psnr"], 2),
            "ssim": round(row["ssim"], 4),
            "psnr_vs_raw_files": round(vs_raw, 2),
            "clip_only_psnr": round(clip_only, 2),
            "train_seconds": round(seconds) if seconds is not None else None,
        }
    line = {"benchmark": "normalization", "machine": machine(), "steps": args.steps, "train_images": len(names) - 100, "held_out": 100, "results": results}
    (out / "results.json").write_text(json.dumps(line, indent=2) + "\n")
    print(json.dumps(line))


if __name__ == "__main__":
    main()
