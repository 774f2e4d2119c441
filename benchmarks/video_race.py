"""Video autoencoders at equal CPU time: the tiny Wan VAE (configs/wan-tiny.yaml: causal 3D, 4x temporal and
8x spatial compression, 16 channels) against the tiny image VAE (configs/tiny.yaml: f8c4) applied frame by
frame, each trained for `--seconds` of training time on the same footage, then evaluated on held-out clips
that no run trained on: per-frame PSNR / SSIM, flicker (the temporal error, `evaluation.metrics.flicker`)
and latent values per second of video.

    .venv/bin/python benchmarks/video_race.py --seconds 900 --out runs/video-race

Footage: no real video is at hand offline, so it is made from the clothing photos (`--photos`, sorted by
name) by a moving camera (`fixtures.camera_clips`: pan, zoom, rotation, a moving occluder): the last
`--holdout` photos make the held-out clips (`--eval-frames` frames at 64 px), the others the training
videos (9 frames at 96 px). All are written as PNG frame folders, so both runs read the same lossless
pixels: the Wan VAE as clips (5 frames, random temporal and 64 px spatial crops), the image VAE as the same
frames one by one (64 px random crops). `--parallel` trains both at once, each pinned to its own core.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from PIL import Image

from harness import ROOT, SHARED, machine, replace_section, train_for, vaetrain

from fixtures.camera_clips import camera_frames

RUNS = {  # name -> (what it is, presets, overrides, data kind)
    "wan_tiny": ("configs/wan-tiny.yaml: AutoencoderKLWan, clips of 5 frames", ["configs/wan-tiny.yaml"], ["--data.frames=5"], "clips"),
    "kl_tiny_per_frame": ("configs/tiny.yaml: AutoencoderKL f8c4 on single frames, applied frame by frame", ["configs/tiny.yaml"], [], "frames"),
}
FPS = 8


def make_footage(photos: Path, out: Path, holdout: int, eval_frames: int) -> tuple[Path, Path]:
    """OUT/train/<photo>/NNN.png (9 frames, 96 px) and OUT/holdout/<photo>/NNN.png (`eval_frames`, 64 px)."""
    files = sorted(p for p in photos.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    train, held = out / "train", out / "holdout"
    for part, chosen, frames, size in ((train, files[:-holdout], 9, 96), (held, files[-holdout:], eval_frames, 64)):
        for index, photo in enumerate(chosen):
            folder = part / photo.stem
            if (folder / f"{frames - 1:03d}.png").is_file():
                continue
            folder.mkdir(parents=True, exist_ok=True)
            for t, frame in enumerate(camera_frames(Image.open(photo), frames, size, seed=index)):
                Image.fromarray(frame).save(folder / f"{t:03d}.png")
    return train, held


def train(name: str, args, footage: Path) -> dict:
    what, configs, overrides, kind = RUNS[name]
    listing = args.out / f"{name}.txt"
    entries = sorted(p.relative_to(footage).as_posix() for p in (footage.iterdir() if kind == "clips" else footage.rglob("*.png")))
    listing.write_text("\n".join(entries) + "\n")
    return train_for(name, configs, overrides, out=args.out, seconds=args.seconds, data=footage, train_list=listing)


def latent_values_per_second(name: str, frames: int, side: int) -> float:
    """Latent values a diffusion model sees per second of video at FPS frames per second."""
    cells = (side // 8) ** 2
    per_clip = (1 + (frames - 1) // 4) * 16 * cells if name == "wan_tiny" else frames * 4 * cells
    return per_clip * FPS / frames


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=900, help="training time per run")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "video-race")
    parser.add_argument("--photos", type=Path, default=SHARED / "clothing")
    parser.add_argument("--holdout", type=int, default=64, help="last photos of the sorted list: held-out clips")
    parser.add_argument("--eval-frames", type=int, default=17)
    parser.add_argument("--parallel", action="store_true", help="train both runs at once, one core each")
    parser.add_argument("--only", choices=sorted(RUNS), help="train this run only (what --parallel launches)")
    parser.add_argument("--no-results", action="store_true")
    args = parser.parse_args()
    if not args.photos.is_dir():
        sys.exit(f"video_race: photo folder {args.photos} not found (the shared/ folder beside the checkout)")
    args.out = args.out.resolve()
    args.out.mkdir(parents=True, exist_ok=True)
    footage, held = make_footage(args.photos, args.out / "footage", args.holdout, args.eval_frames)
    if args.only:
        train(args.only, args, footage)
        return
    if args.parallel:
        children = [
            subprocess.Popen(
                ["taskset", "-c", str(core), sys.executable, __file__, "--only", name, "--seconds", str(args.seconds), "--out", str(args.out)],
                env=os.environ | {"OMP_NUM_THREADS": "1"},
            )
            for core, name in enumerate(RUNS)
        ]
        if any(child.wait() for child in children):
            sys.exit("video_race: a training run failed")
    trained = {name: train(name, args, footage) for name in RUNS}  # done.json of each, or trained here in turn
    target = args.out / "eval"
    vaetrain(
        "eval",
        *[str(args.out / n / "diffusers") for n in RUNS],
        *("--data.path", str(held), "--data.frames", str(args.eval_frames), "--data.resolution", "64", "--data.batch_size", "4"),
        *("--metrics", "psnr,ssim", "--out", str(target)),
    )
    rows = {Path(row["model"]).parent.name: row for row in json.loads((target / "metrics.json").read_text())}
    (args.out / "race.json").write_text(json.dumps({"trained": trained, "metrics": rows}, indent=2, default=str))
    table = ["| run | what | steps (s/step) | PSNR ↑ | SSIM ↑ | flicker ↓ | latent values / s |", "|---|---|---|---|---|---|---|"]
    for name, (what, *_rest) in RUNS.items():
        steps, row = trained[name]["generator_steps"], rows[name]
        values = latent_values_per_second(name, args.eval_frames, 64)
        table.append(
            f"| {name} | {what} | {steps} ({args.seconds / max(steps, 1):.2f}) | {row['psnr']:.2f} | {row['ssim']:.4f} | {row['flicker']:.2f} | {values:.0f} |"
        )
    markdown = "\n".join(table)
    print(markdown)
    if not args.no_results:
        write_results(markdown, args, held)


def write_results(markdown: str, args, held: Path) -> None:
    clips = sum(1 for _ in held.iterdir())
    markers = ("<!-- video-race -->", "<!-- /video-race -->")
    section = (
        f"{markers[0]}\n## Video autoencoders at equal CPU time (issue 24)\n\n"
        f"Command: `.venv/bin/python benchmarks/video_race.py --seconds {args.seconds}{' --parallel' if args.parallel else ''}`. "
        f"Machine: {machine()}; no GPU; precision as `fit` picks; each run {args.seconds} s of training time on one core "
        f"(`taskset`, `OMP_NUM_THREADS=1`). Footage: camera motion over the clothing photos (pan, zoom, rotation, a moving occluder; "
        f"`fixtures.camera_clips`), PNG frame folders; training on the first {len(list((args.out / 'footage' / 'train').iterdir()))} photos' videos, "
        f"evaluation on {clips} held-out clips of {args.eval_frames} frames at 64 px (photos never trained on). PSNR / SSIM per frame, "
        f"averaged; flicker: mean |reconstruction's frame-to-frame change - original's| in 8-bit levels; latent values per second at "
        f"{FPS} fps and 64 px (Wan: (1 + (T-1)/4) x 16 x H/8 x W/8 per clip of T frames; the image VAE: T x 4 x H/8 x W/8).\n\n"
        f"{markdown}\n{markers[1]}"
    )
    replace_section(section, markers)


if __name__ == "__main__":
    main()
