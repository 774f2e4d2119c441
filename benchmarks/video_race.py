"""Video autoencoders at equal CPU time: the tiny Wan VAE (configs/wan-tiny.yaml: causal 3D, 4x temporal and
8x spatial compression, 16 channels) against the tiny image VAE (configs/tiny.yaml: f8c4) applied frame by
frame, each trained for `--seconds` of training time on the same footage, then evaluated on held-out clips
that no run trained on: per-frame PSNR / SSIM, flicker (the temporal error, `evaluation.metrics.flicker`)
and latent values per second of video.

    .venv/bin/python benchmarks/video_race.py --seconds 900 --out runs/video-race
    .venv/bin/python benchmarks/video_race.py --videos benchmarks/videos --cpu-seconds 360 --parallel --out runs/video-race-real

Footage: no real video is at hand offline, so it is made from the clothing photos (`--photos`, sorted by
name) by a moving camera (`fixtures.camera_clips`: pan, zoom, rotation, a moving occluder): the last
`--holdout` photos make the held-out clips (`--eval-frames` frames at 64 px), the others the training
videos (9 frames at 96 px). All are written as PNG frame folders, so both runs read the same lossless
pixels: the Wan VAE as clips (5 frames, random temporal and 64 px spatial crops), the image VAE as the same
frames one by one (64 px random crops). `--parallel` trains both at once, each pinned to its own core.

`--videos FOLDER` races on real footage instead (`real_footage`: whole scenes held out, frame folders at 64 px
short side): tiny Wan on clips of 5, 9 and 17 frames (and `--runs` may add the mixed-length draw) against the
tiny image VAE, each for `--cpu-seconds` of its own CPU time (`cpu_budget`), two at a time on cores 0 and 1
with `--parallel`; evaluated on held-out clips of `--eval-frames` (33) frames with the per-chunk PSNR and drift.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import real_footage
from PIL import Image

from harness import ROOT, SHARED, machine, replace_section, train_for, vaetrain
from vaetrain.checkpoints import load_autoencoder

from fixtures.camera_clips import camera_frames

RUNS = {  # name -> (what it is, presets, overrides, data kind)
    "wan_tiny": ("configs/wan-tiny.yaml: AutoencoderKLWan, clips of 5 frames", ["configs/wan-tiny.yaml"], ["--data.frames=5"], "clips"),
    "kl_tiny_per_frame": ("configs/tiny.yaml: AutoencoderKL f8c4 on single frames, applied frame by frame", ["configs/tiny.yaml"], [], "frames"),
}
REAL_RUNS = {  # real footage: name -> (what it is, presets, overrides, data kind)
    **{f"wan_tiny_{t}": (f"wan-tiny.yaml, clips of {t} frames", ["configs/wan-tiny.yaml"], [f"--data.frames={t}"], "clips") for t in (5, 9, 17)},
    "wan_tiny_mixed": ("wan-tiny.yaml, clip length drawn from 5, 9, 17 per batch", ["configs/wan-tiny.yaml"], ["--data.frames=[5,9,17]"], "clips"),
    "kl_tiny_per_frame": ("tiny.yaml (f8c4 image VAE), frame by frame", ["configs/tiny.yaml"], [], "frames"),
}
REAL_DEFAULT = "wan_tiny_5,wan_tiny_9,wan_tiny_17,kl_tiny_per_frame"
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
    what, configs, overrides, kind = (REAL_RUNS if args.videos else RUNS)[name]
    listing = args.out / f"{name}.txt"
    entries = sorted(p.relative_to(footage).as_posix() for p in (footage.iterdir() if kind == "clips" else footage.rglob("*.png")))
    listing.write_text("\n".join(entries) + "\n")
    if args.videos:  # the run's own CPU time, decoding included (no loader workers)
        overrides = [*overrides, "--data.num_workers=0", "--data.val_size=0"]  # every training scene trains (validation is off)
        if args.seed is not None:  # another seed of the same race: weights, crops, clip starts and clip lengths
            overrides += [f"--seed_everything={args.seed}", f"--data.seed={args.seed}"]
        return train_for(name, configs, overrides, out=args.out, seconds=args.cpu_seconds, data=footage, train_list=listing, cpu_seconds=True)
    return train_for(name, configs, overrides, out=args.out, seconds=args.seconds, data=footage, train_list=listing)


def launch_two_at_a_time(names: list[str], args) -> None:
    """Each run in its own process pinned to core 0 or 1 (`OMP_NUM_THREADS=1`), two at a time."""
    waiting, running = list(names), {}
    while waiting or running:
        while waiting and len(running) < 2:
            core = min({0, 1} - set(running.values()))
            command = [sys.executable, __file__, "--only", waiting.pop(0), "--out", str(args.out), "--seconds", str(args.seconds)]
            command += ["--videos", str(args.videos), "--cpu-seconds", str(args.cpu_seconds), "--holdout-scenes", ",".join(args.holdout_scenes)]
            command += ["--seed", str(args.seed)] if args.seed is not None else []
            child = subprocess.Popen(["taskset", "-c", str(core), *command], env=os.environ | {"OMP_NUM_THREADS": "1"})
            running[child] = core
        child = next(iter(running)) if len(running) == 1 else _first_done(running)
        if child.wait():
            sys.exit("video_race: a training run failed")
        del running[child]


def _first_done(running: dict) -> subprocess.Popen:
    while True:
        for child in running:
            if child.poll() is not None:
                return child
        time.sleep(5)


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
    parser.add_argument("--eval-frames", type=int, default=None, help="frames of a held-out clip (17; 33 with --videos)")
    parser.add_argument("--parallel", action="store_true", help="train the runs at once, one core each (two at a time with --videos)")
    parser.add_argument("--only", choices=sorted({*RUNS, *REAL_RUNS}), help="train this run only (what --parallel launches)")
    parser.add_argument("--no-results", action="store_true")
    parser.add_argument("--videos", type=Path, help="race on the real videos of this folder (benchmarks/videos)")
    parser.add_argument("--holdout-scenes", type=lambda text: tuple(text.split(",")), default=real_footage.HOLDOUT, help="video stems never trained on")
    parser.add_argument("--cpu-seconds", type=int, default=360, help="with --videos: CPU seconds of training per run")
    parser.add_argument("--seed", type=int, help="with --videos: seed every run with this (the presets' own seed 0 when absent)")
    parser.add_argument("--runs", default=REAL_DEFAULT, help=f"with --videos: comma-separated, of {', '.join(REAL_RUNS)}")
    args = parser.parse_args()
    args.eval_frames = args.eval_frames or (33 if args.videos else 17)
    args.out = args.out.resolve()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.videos:
        race_real(args)
        return
    if not args.photos.is_dir():
        sys.exit(f"video_race: photo folder {args.photos} not found (the shared/ folder beside the checkout)")
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


def race_real(args) -> None:
    """Trains the chosen runs on the training scenes, measures each on the held-out clips, writes race.json
    and (unless --no-results) RESULTS.md's video-race-32 section."""
    args.videos = args.videos.resolve()
    footage, held = real_footage.prepare(args.videos, args.out / "footage", args.holdout_scenes, eval_frames=args.eval_frames)
    if args.only:
        train(args.only, args, footage)
        return
    names = [name for name in args.runs.split(",") if name]
    unknown = sorted(set(names) - set(REAL_RUNS))
    if unknown:
        sys.exit(f"video_race: --runs names unknown run(s) {', '.join(unknown)} (known: {', '.join(REAL_RUNS)})")
    if args.parallel:
        launch_two_at_a_time(names, args)
    trained = {name: train(name, args, footage) for name in names}
    measured = {}
    for name in names:
        cached = args.out / name / "heldout.json"
        if not cached.is_file():
            cached.write_text(json.dumps(real_footage.evaluate_clips(load_autoencoder(args.out / name / "diffusers"), held, args.eval_frames)))
        measured[name] = json.loads(cached.read_text())
    (args.out / "race.json").write_text(json.dumps({"trained": trained, "metrics": measured}, indent=2, default=str))
    table = [
        "| run | what | steps (CPU s/step) | PSNR ↑ | SSIM ↑ | flicker ↓ | PSNR by chunk 1, 2, …, last | drift (dB) | largest gap to chunk 2 (dB) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name in names:
        steps, row, chunks = trained[name]["generator_steps"], measured[name], measured[name]["chunks"]
        spread = max(abs(c - chunks[1]) for c in chunks[2:])
        table.append(
            f"| `{name}` | {REAL_RUNS[name][0]} | {steps} ({trained[name]['cpu_seconds'] / max(steps, 1):.2f}) | {row['psnr']:.2f} | {row['ssim']:.4f} "
            f"| {row['flicker']:.2f} | {' / '.join(f'{c:.2f}' for c in chunks)} | {row['drift']:+.2f} | {spread:.2f} |"
        )
    markdown = "\n".join(table)
    print(markdown)
    if not args.no_results:
        write_real_results(markdown, args, held)


def write_real_results(markdown: str, args, held: Path) -> None:
    train_scenes, held_scenes = real_footage.split_scenes(args.videos, args.holdout_scenes)
    clips = sum(1 for p in held.iterdir() if p.is_dir())
    markers = ("<!-- video-race-32:start -->", "<!-- video-race-32:end -->")
    section = (
        f"{markers[0]}\n## Video autoencoders on real footage at equal CPU time (issue 32)\n\n"
        f"Command: `.venv/bin/python benchmarks/video_race.py --videos benchmarks/videos --cpu-seconds {args.cpu_seconds} --runs {args.runs}"
        f"{' --parallel' if args.parallel else ''}`. Machine: {machine()}; no GPU; precision as `fit` picks; each run {args.cpu_seconds} "
        f"CPU seconds of its own process (`benchmarks/cpu_budget.py`; loader workers off so decoding is counted), one core each "
        f"(`taskset`, `OMP_NUM_THREADS=1`), two at a time on a machine other jobs shared. Footage: real videos (benchmarks/videos/SOURCES.md); "
        f"training on every frame of {len(train_scenes)} scenes ({', '.join(p.stem for p in train_scenes)}) as frame folders scaled to "
        f"64 px short side (random 64 px crops; Wan: random clip starts); evaluation on {clips} clips of {args.eval_frames} frames cut from "
        f"{len(held_scenes)} scenes never trained on ({', '.join(p.stem for p in held_scenes)}), centre-cropped at 64 px, through `measure` "
        f"(fp32). PSNR / SSIM per frame, averaged; flicker: mean |reconstruction's frame-to-frame change - original's| in 8-bit levels; "
        f"PSNR by chunk: chunk 1 is frame 1, chunk k frames 4k-6..4k-3; drift: mean of chunks 3..last minus chunk 2; "
        f"largest gap: the largest |chunk k - chunk 2|, k >= 3 (both computed in the benchmark, `real_footage.py`).\n\n{markdown}\n{markers[1]}"
    )
    replace_section(section, markers)


if __name__ == "__main__":
    main()
