"""Which recipe gives the better autoencoder in the same wall-clock time: trains each recipe on the same
images for `--seconds` of training time, one at a time, then evaluates every result on the same held-out
images with `vaetrain eval`, and writes a markdown table into benchmarks/RESULTS.md.

    .venv/bin/python benchmarks/recipe_race.py --seconds 1800 --out runs/race

Data: `--data` (default ../shared/data/tiny-imagenet-val) split by sorted file name: the last `--holdout`
images are never trained on and are evaluated at 64 px; `--clothing` images (never trained on) are
evaluated at 64 and 128 px. Recipes are overrides of configs/tiny.yaml (tiny architecture, 64 px,
batch 8) run through `vaetrain fit` with `--trainer.max_time`; Lightning's timer counts training time
only and is saved in checkpoints, so an interrupted race resumes each unfinished recipe (`--ckpt_path
last`) with its remaining time, and finished recipes are skipped. LPIPS in the table runs on a randomly
initialised AlexNet (no pretrained weights offline): for plumbing only, not a quality measure.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "RESULTS.md"
LPIPS = ["--model.loss.perceptual_weight=1.0"]  # configs/tiny.yaml trains without LPIPS since this race (see RESULTS.md)
GRADNORM = [*LPIPS, "--model.loss.balance=gradnorm", "--model.loss.reconstruction_weight=0.001", "--model.loss.disc_weight=1.0", "--model.loss.disc_start_step=0"]
LOWPASS = ["--model.loss.pooled_reconstruction.weight=1.0", "--model.loss.pooled_reconstruction.factor=2", "--model.loss.pooled_reconstruction.mask=true"]
RECIPES: dict[str, tuple[str, list[str]]] = {
    "ldm": ("LDM's objective on the tiny model: L1 + LPIPS + KL, hinge PatchGAN from step 200, LDM's adaptive weight", LPIPS),
    "ldm_lecam": ("ldm + LeCam 0.1 on the discriminator", [*LPIPS, "--model.loss.lecam_weight=0.1"]),
    "ldm_no_lpips": ("ldm without LPIPS (L1 + KL + adaptive PatchGAN): cheaper steps", ["--model.loss.perceptual_weight=0.0"]),
    "gradnorm": ("gradient normalisation (LPIPS 1, L1 0.001, GAN 1), PatchGAN from step 0", GRADNORM),
    "gradnorm_lowpass": ("gradnorm + pooled (2x) flat-region-masked L1 at 1", GRADNORM + LOWPASS),
    "gradnorm_no_lpips": (
        "gradnorm without LPIPS: L1 1, pooled (2x) masked L1 1, GAN 0.1 from step 0",
        [*GRADNORM[:2], "--model.loss.reconstruction_weight=1.0", "--model.loss.perceptual_weight=0.0", "--model.loss.disc_weight=0.1",
         "--model.loss.disc_start_step=0", *LOWPASS],
    ),
    "vqgan_training": (
        "configs/vqgan-training.yaml's recipe on the tiny model: gradnorm (LPIPS 1, pooled masked L1 1, GAN 1), "
        "fixed posterior (0.1, clamp 8, 0.1 mean(mu^2)), VGG16 discriminator (random), thresholded hinge + LeCam 0.1, "
        "AdamW (0.9, 0.95) lr 2^-7/width, conv_in 1e-4, warm-up + cosine",
        [*GRADNORM[:2], "--model.loss.reconstruction_weight=0.0", "--model.loss.disc_weight=1.0", "--model.loss.disc_start_step=0", *LOWPASS,
         "--model.autoencoder.posterior=fixed", "--model.autoencoder.posterior_std=0.1", "--model.autoencoder.latent_clamp=8.0",
         "--model.loss.kl_weight=0.1", "--model.discriminator.kind=vgg16", "--model.discriminator.vgg_backbone=random",
         "--model.discriminator.base_channels=64", "--model.discriminator.num_layers=3",  # tiny.yaml's PatchGAN fields back to unset
         "--model.loss.gan_loss=thresholded_hinge", "--model.loss.lecam_weight=0.1",
         "--model.optimizer.generator={name: adamw, lr: 0.0078125, lr_scale: width, conv_in_lr: 1.0e-4, betas: [0.9, 0.95], "
         "weight_decay: 1.0e-3, scheduler: cosine, warmup_steps: 200}",
         "--model.optimizer.discriminator={name: adamw, lr: 1.0e-5, betas: [0.9, 0.95], weight_decay: 1.0e-3}",
         "--model.training.schedule_steps=2000"],
    ),
}
EQUIVARIANCE = ["--model.loss.equivariance={probability: 0.5, min_scale: 0.25, max_scale: 0.97, rotate: true, low_resolution_probability: 0.25}"]
EVALS = (("tiny_imagenet_64", "holdout", 64), ("clothing_64", "clothing", 64), ("clothing_128", "clothing", 128))


def recipe(name: str) -> tuple[str, list[str]]:
    """A named recipe; NAME+eq adds EQ-VAE's equivariance term (its reference settings) to it."""
    base, _, extra = name.partition("+")
    if base not in RECIPES or extra not in ("", "eq"):
        raise KeyError(name)
    description, overrides = RECIPES[base]
    if extra == "eq":
        return f"{base} + EQ-VAE's equivariance term (probability 0.5, scales 8/32..31/32, rotations, low-resolution batches 0.25)", overrides + EQUIVARIANCE
    return description, overrides


def split(data: Path, holdout: int, out: Path) -> tuple[Path, Path]:
    files = sorted(p.relative_to(data).as_posix() for p in data.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    train, held = out / "train.txt", out / "holdout.txt"
    train.write_text("\n".join(files[:-holdout]) + "\n")
    held.write_text("\n".join(files[-holdout:]) + "\n")
    return train, held


def train(name: str, overrides: list[str], args, train_list: Path, config: str = "configs/tiny.yaml") -> dict:
    """`vaetrain fit` of `config` + `overrides` for `args.seconds` of training time into OUT/NAME (skipped when
    done; resumed when interrupted); returns its steps and times."""
    run = args.out / name
    done = run / "done.json"
    if done.is_file():
        return json.loads(done.read_text())
    resume = ["--ckpt_path=last"] if (run / "checkpoints" / "last.ckpt").is_file() else []
    command = [
        str(ROOT / ".venv" / "bin" / "vaetrain"), "fit", "--config", config, f"--data.path={args.data}",
        f"--data.file_list={train_list}", "--data.val_size=16", "--trainer.limit_val_batches=0", "--trainer.max_steps=-1",
        f"--trainer.max_time=00:00:{args.seconds // 60:02d}:{args.seconds % 60:02d}", f"--trainer.default_root_dir={run}",
        "--trainer.enable_progress_bar=false", "--checkpoint.every_n_train_steps=500", "--grid.every_n_steps=500",
        "--export.latent_statistics_images=64", *overrides, *resume,
    ]
    started = time.time()
    subprocess.run(command, check=True, cwd=ROOT)
    counters = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True, map_location="cpu")
    result = {"generator_steps": counters["vaetrain"]["counters"]["generator_steps"],
              "train_seconds": counters["callbacks"].get("Timer", {}).get("time_elapsed", {}).get("train"),
              "wall_seconds": round(time.time() - started, 1)}
    done.write_text(json.dumps(result))
    return result


def evaluate(names: list[str], args, holdout: Path) -> dict[str, dict[str, dict]]:
    """One `vaetrain eval` per image set with every recipe's exported EMA weights: the same images for all."""
    metrics: dict[str, dict[str, dict]] = {name: {} for name in names}
    for label, source, resolution in EVALS:
        data = ["--data.path", str(args.data), "--data.file_list", str(holdout)] if source == "holdout" else \
            ["--data.path", str(args.clothing), "--data.max_images", str(args.clothing_images)]
        out = args.out / f"eval_{label}"
        subprocess.run([str(ROOT / ".venv" / "bin" / "vaetrain"), "eval", *[str(args.out / n / "diffusers") for n in names], *data,
                        "--data.resolution", str(resolution), "--data.batch_size", "16", "--metrics", "psnr,ssim,lpips",
                        "--backbones", "random", "--out", str(out)], check=True, cwd=ROOT)
        for row in json.loads((out / "metrics.json").read_text()):
            metrics[Path(row["model"]).parent.name][label] = {k: row[k] for k in ("psnr", "ssim", "lpips", "images")}
    return metrics


def probe(names: list[str], args, holdout: Path, metrics: dict) -> None:
    """The diffusability probe on every recipe's exported VAE, on the held-out Tiny-ImageNet images."""
    out = args.out / "probe"
    subprocess.run([str(ROOT / ".venv" / "bin" / "vaetrain"), "probe", *[str(args.out / n / "diffusers") for n in names],
                    "--data.path", str(args.data), "--data.file_list", str(holdout), "--data.resolution", "64",
                    "--probe-steps", str(args.probe_steps), "--backbones", "random", "--out", str(out)], check=True, cwd=ROOT)
    for row in json.loads((out / "probe.json").read_text()):
        metrics[Path(row["model"]).parent.name]["probe"] = {k: row[k] for k in ("probe_validation_loss", "probe_fid", "probe_seconds")}


def table(names: list[str], trained: dict, metrics: dict, args) -> str:
    probed = all("probe" in metrics[n] for n in names)
    header = "| recipe | steps | s/step | " + " | ".join(f"{label} PSNR / SSIM" for label, _, _ in EVALS) + " | LPIPS* (tiny-imagenet) |"
    header += " probe loss ↓ | probe FID* |" if probed else ""
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    for name in sorted(names, key=lambda n: -metrics[n]["tiny_imagenet_64"]["psnr"]):
        steps, seconds = trained[name]["generator_steps"], trained[name]["train_seconds"] or args.seconds
        cells = [f"{metrics[name][label]['psnr']:.2f} / {metrics[name][label]['ssim']:.4f}" for label, _, _ in EVALS]
        line = f"| `{name}` | {steps} | {seconds / max(steps, 1):.2f} | " + " | ".join(cells) + f" | {metrics[name]['tiny_imagenet_64']['lpips']:.4f} |"
        if probed:
            line += f" {metrics[name]['probe']['probe_validation_loss']:.4f} | {metrics[name]['probe']['probe_fid']:.1f} |"
        lines.append(line)
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=1800, help="training time per recipe")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "race")
    parser.add_argument("--recipes", default=",".join(RECIPES), help=f"comma-separated, of {','.join(RECIPES)}, each optionally +eq")
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "tiny-imagenet-val")
    parser.add_argument("--holdout", type=int, default=1000, help="last images of the sorted list, never trained on")
    parser.add_argument("--clothing", type=Path, default=ROOT.parent / "shared" / "data" / "clothing")
    parser.add_argument("--clothing-images", type=int, default=300)
    parser.add_argument("--no-results", action="store_true", help="do not write benchmarks/RESULTS.md")
    parser.add_argument("--probe-steps", type=int, default=0, help="also run the diffusability probe with this many steps (0: no)")
    parser.add_argument("--section", default="recipe-race", help="the RESULTS.md section to write (its own markers)")
    parser.add_argument("--title", default="Recipe race (issue 11)")
    args = parser.parse_args()
    for folder in (args.data, args.clothing):
        if not folder.is_dir():
            sys.exit(f"recipe_race: image folder {folder} not found (the shared/ folder beside the checkout)")
    args.out = args.out.resolve()
    args.out.mkdir(parents=True, exist_ok=True)
    names = [n.strip() for n in args.recipes.split(",") if n.strip()]
    unknown = [name for name in names if not _known(name)]
    if unknown:
        sys.exit(f"recipe_race: unknown recipes {', '.join(unknown)}; choose from {', '.join(RECIPES)}")
    train_list, holdout = split(args.data, args.holdout, args.out)
    trained = {name: train(name, recipe(name)[1], args, train_list) for name in names}
    metrics = evaluate(names, args, holdout)
    if args.probe_steps:
        probe(names, args, holdout, metrics)
    (args.out / "race.json").write_text(json.dumps({"trained": trained, "metrics": metrics}, indent=2))
    markdown = table(names, trained, metrics, args)
    print(markdown)
    if not args.no_results:
        write_results(markdown, names, args)


def _known(name: str) -> bool:
    try:
        recipe(name)
    except KeyError:
        return False
    return True


def write_results(markdown: str, names: list[str], args) -> None:
    markers = (f"<!-- {args.section}:start -->", f"<!-- {args.section}:end -->")
    command = f".venv/bin/python benchmarks/recipe_race.py --seconds {args.seconds} --recipes {','.join(names)}"
    command += f" --probe-steps {args.probe_steps} --section {args.section}" if args.probe_steps else ""
    machine = f"{platform.machine()} {platform.processor() or 'cpu'}, {torch.get_num_threads()} threads, torch {torch.__version__}"
    recipes = "\n".join(f"- `{name}`: {recipe(name)[0]}" for name in names)
    probe_note = (f" The probe: the same tiny diffusion transformer trained {args.probe_steps} steps (rectified flow) on each VAE's "
                  "latents of the held-out images; its validation loss (lower: easier latents) and *FID of 64 decoded samples on a random "
                  "Inception (plumbing only).") if args.probe_steps else ""
    section = (
        f"{markers[0]}\n## {args.title}\n\nCommand: `{command}`. Machine: {machine}; no GPU; precision as `fit` picks "
        f"(bf16-mixed where the CPU has native bf16). Each recipe trained {args.seconds} s (Lightning's training timer) on "
        f"{args.data.name} minus its last {args.holdout} sorted files, tiny architecture at 64 px, batch 8, one recipe at a "
        f"time; every result (EMA weights) evaluated on the same held-out images: the {args.holdout} held-out Tiny-ImageNet "
        f"images at 64 px and {args.clothing_images} clothing photos center-cropped at 64 and 128 px (MS-SSIM needs 161 px: "
        f"not reported). *LPIPS runs on a randomly initialised AlexNet (no weights offline): plumbing only, not a quality "
        f"measure. Sorted by Tiny-ImageNet PSNR.{probe_note}\n\n{markdown}\n\n{recipes}\n{markers[1]}"
    )
    replace_section(section, markers)


def replace_section(section: str, markers: tuple[str, str]) -> None:
    """Writes `section` (starting and ending with `markers`) into RESULTS.md in place of its previous version."""
    text = RESULTS.read_text() if RESULTS.is_file() else "# Benchmark results\n"
    if markers[0] in text:
        start, end = text.index(markers[0]), text.index(markers[1]) + len(markers[1])
        text = text[:start] + section + text[end:]
    else:
        text = text.rstrip() + "\n\n" + section + "\n"
    RESULTS.write_text(text)


if __name__ == "__main__":
    main()
