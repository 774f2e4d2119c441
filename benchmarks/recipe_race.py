"""Which recipe gives the better autoencoder in the same wall-clock time: trains each recipe on the same
images for `--seconds` of training time, one at a time, then evaluates every result on the same held-out
images with `vaetrain eval`, and writes a markdown table into benchmarks/RESULTS.md.

    .venv/bin/python benchmarks/recipe_race.py --seconds 1800 --out runs/race

Data: `--data` (default ../shared/data/tiny-imagenet-val) split by sorted file name: the last `--holdout`
images are never trained on and are evaluated at 64 px; `--clothing` images (never trained on) are
evaluated at 64 and 128 px. Recipes are presets layered in order (`RECIPES`: configs/tiny.yaml + an
overlay of configs/race/, or a full preset shrunk to the tiny model by configs/race/tiny_model.yaml), so the
race trains exactly the presets it names, through `vaetrain fit` with `--trainer.max_time`; Lightning's timer counts training time
only and is saved in checkpoints, so an interrupted race resumes each unfinished recipe (`--ckpt_path
last`) with its remaining time, and finished recipes are skipped. LPIPS in the table runs on a randomly
initialised AlexNet (no pretrained weights offline): for plumbing only, not a quality measure.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from diffusers_example import train_example
from harness import EVALS, ROOT, SHARED, evaluate_runs, holdout_split, machine, replace_section, train_for, vaetrain

TINY = "configs/tiny.yaml"
RECIPES: dict[str, tuple[str, list[str]]] = {  # name -> (what it is, the presets it trains, layered in order)
    "tiny": ("configs/tiny.yaml as it is (what `make demo` trains)", [TINY]),
    "ms_ssim_l1": ("tiny with Zhao et al.'s MS-SSIM + L1 mix in place of L1 (no LPIPS)", [TINY, "configs/race/ms_ssim_l1.yaml"]),
    "ms_ssim_l1_lpips": ("ldm with the MS-SSIM + L1 mix in place of L1 (LPIPS 1)", [TINY, "configs/race/ldm.yaml", "configs/race/ms_ssim_l1.yaml"]),
    "focal_frequency": ("tiny + the focal frequency loss (weight 1, alpha 1) beside L1 (no LPIPS)", [TINY, "configs/race/focal_frequency.yaml"]),
    "focal_frequency_lpips": ("ldm + the focal frequency loss (weight 1, alpha 1)", [TINY, "configs/race/ldm.yaml", "configs/race/focal_frequency.yaml"]),
    "repa_e": (
        "tiny + REPA-E's end-to-end tuning: a tiny SiT trained in the same step, its REPA alignment (random-small encoder) into the VAE at 1.5",
        [TINY, "configs/race/repa_e.yaml"],
    ),
    "ldm": ("LDM's objective on the tiny model: L1 + LPIPS + KL, hinge PatchGAN from step 200, LDM's adaptive weight", [TINY, "configs/race/ldm.yaml"]),
    "ldm_lecam": ("ldm + LeCam 0.1 on the discriminator", [TINY, "configs/race/ldm_lecam.yaml"]),
    "ldm_no_lpips": ("ldm without LPIPS (L1 + KL + adaptive PatchGAN): cheaper steps", [TINY, "configs/race/ldm_no_lpips.yaml"]),
    "gradnorm": ("gradient normalisation (LPIPS 1, L1 0.001, GAN 1), PatchGAN from step 0", [TINY, "configs/race/gradnorm.yaml"]),
    "gradnorm_lowpass": ("gradnorm + pooled (2x) flat-region-masked L1 at 1", [TINY, "configs/race/gradnorm.yaml", "configs/race/lowpass.yaml"]),
    "gradnorm_no_lpips": (
        "gradnorm without LPIPS: L1 1, pooled (2x) masked L1 1, GAN 0.1 from step 0",
        [TINY, "configs/race/gradnorm.yaml", "configs/race/lowpass.yaml", "configs/race/no_lpips_gradnorm.yaml"],
    ),
    "vq": (
        "configs/vq-tiny.yaml: VQModel f8, 1024 codes of dimension 4, taming's VectorQuantizer2 (beta 0.25), L1 + adaptive PatchGAN",
        ["configs/vq-tiny.yaml"],
    ),
    "vq_alive": (
        "vq + codes kept alive: EMA codebook (0.99), k-means start, dead-code restarts (Jukebox, threshold 1)",
        ["configs/vq-tiny.yaml", "configs/race/vq_alive.yaml"],
    ),
    "fsq": ("vq with FSQ levels [8, 5, 5, 5] (1000 codes) instead of the codebook", ["configs/vq-tiny.yaml", "configs/race/fsq.yaml"]),
    "rae_tiny": (
        "configs/rae-tiny.yaml: AutoencoderRAE, a RANDOM tiny DINOv2-with-registers encoder (frozen, 64 channels at 8 x 8) and a trained "
        "ViT decoder; L1 + hinge GAN with a RANDOM tiny DINO-ViT discriminator backbone (trained heads, DiffAugment), adaptive weight 0.75, "
        "RAE's cosine LR; plumbing only (configs/race/rae_tiny.yaml: schedule over 500 steps)",
        ["configs/rae-tiny.yaml", "configs/race/rae_tiny.yaml"],
    ),
    "vqgan_training": (
        "configs/vqgan-training.yaml itself on the tiny model (configs/race/tiny_model.yaml), LPIPS and the VGG16 discriminator random "
        "(configs/race/offline_vgg16.yaml)",
        ["configs/vqgan-training.yaml", "configs/race/tiny_model.yaml", "configs/race/offline_vgg16.yaml"],
    ),
}
EQUIVARIANCE = "configs/race/eq.yaml"
SWEEP = {  # NAME@VALUE: the recipe with one setting changed (the tiny preset's sweep)
    "lr": ("learning rate of both networks", ("--model.optimizer.generator.lr={}", "--model.optimizer.discriminator.lr={}")),
    "ema": ("EMA decay", ("--model.ema.decay={}",)),
    "gan_start": ("GAN start (generator steps)", ("--model.loss.disc_start_step={}",)),
}
EXAMPLES = {  # name -> (what it is, its arguments): baselines trained by their own script (benchmarks/diffusers_example.py)
    "diffusers_example": ("diffusers' examples/research_projects/autoencoderkl/train_autoencoderkl.py, its own defaults (benchmarks/diffusers_example.py)", []),
    "diffusers_example_tiny_lr": (
        "the same script with tiny.yaml's learning rate and batch (lr 2e-4 for both networks, batch 8), its other defaults",
        ["--learning_rate", "2e-4", "--disc_learning_rate", "2e-4", "--train_batch_size", "8"],
    ),
}


def recipe(name: str) -> tuple[str, list[str], list[str]]:
    """A named recipe: (what it is, its presets, its command-line overrides). NAME+eq adds EQ-VAE's equivariance
    term (its reference settings); NAME@SETTING=VALUE changes one setting of `SWEEP`."""
    name, _, swept = name.partition("@")
    base, _, extra = name.partition("+")
    setting, _, value = swept.partition("=")
    if base not in RECIPES or extra not in ("", "eq") or (swept and (setting not in SWEEP or not value)):
        raise KeyError(name)
    description, configs = RECIPES[base]
    if extra == "eq":
        description = f"{base} + EQ-VAE's equivariance term (probability 0.5, scales 8/32..31/32, rotations, low-resolution batches 0.25)"
        configs = [*configs, EQUIVARIANCE]
    if not swept:
        return description, configs, []
    what, flags = SWEEP[setting]
    return f"{name} with {what} {value}", configs, [flag.format(value) for flag in flags]


def probe(names: list[str], args, holdout: Path, metrics: dict) -> None:
    """The diffusability probe on every recipe's exported VAE, on the held-out Tiny-ImageNet images."""
    out = args.out / "probe"
    vaetrain(
        "probe",
        *[str(args.out / n / "diffusers") for n in names],
        "--data.path",
        str(args.data),
        "--data.file_list",
        str(holdout),
        "--data.resolution",
        "64",
        "--probe-steps",
        str(args.probe_steps),
        *(["--tokens", "--token-steps", str(args.token_steps)] if args.token_steps else []),
        "--backbones",
        "random",
        "--out",
        str(out),
    )
    for row in json.loads((out / "probe.json").read_text()):
        keys = ("probe_validation_loss", "probe_fid", "probe_seconds", "token_nll", "token_bits_per_image")
        metrics[Path(row["model"]).parent.name]["probe"] = {k: row.get(k) for k in keys}


def table(names: list[str], trained: dict, metrics: dict, args) -> str:
    probed = all("probe" in metrics[n] for n in names)
    discrete = any(metrics[n]["tiny_imagenet_64"].get("codebook_usage") is not None for n in names)
    tokens = probed and any(metrics[n]["probe"].get("token_nll") is not None for n in names)
    header = "| recipe | steps | s/step | " + " | ".join(f"{label} PSNR / SSIM" for label, _, _ in EVALS) + " | LPIPS* (tiny-imagenet) |"
    header += " ΔE00 ↓ / bias R, G, B (clothing native) |"
    header += " codes used / perplexity (tiny-imagenet) |" if discrete else ""
    header += " probe loss ↓ | probe FID* |" if probed else ""
    header += " token NLL ↓ (nats) / bits per image |" if tokens else ""
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    for name in sorted(names, key=lambda n: -metrics[n]["tiny_imagenet_64"]["psnr"]):
        steps, seconds = trained[name]["generator_steps"], trained[name]["train_seconds"] or args.seconds
        cells = [f"{metrics[name][label]['psnr']:.2f} / {metrics[name][label]['ssim']:.4f}" if label in metrics[name] else "—" for label, _, _ in EVALS]
        line = f"| `{name}` | {steps} | {seconds / max(steps, 1):.2f} | " + " | ".join(cells) + f" | {metrics[name]['tiny_imagenet_64']['lpips']:.4f} |"
        native = metrics[name].get("clothing_native")
        line += f" {native['delta_e']:.2f} / {', '.join(f'{b:+.1f}' for b in native['bias_channels'])} |" if native else " — |"
        held = metrics[name]["tiny_imagenet_64"]
        if discrete:
            used = held.get("codebook_usage")
            line += f" {used:.3f} / {held['codebook_perplexity']:.0f} |" if used is not None else " — |"
        if probed:
            line += f" {metrics[name]['probe']['probe_validation_loss']:.4f} | {metrics[name]['probe']['probe_fid']:.1f} |"
        if tokens:
            nll = metrics[name]["probe"].get("token_nll")
            line += f" {nll:.3f} / {metrics[name]['probe']['token_bits_per_image']:.0f} |" if nll is not None else " — |"
        lines.append(line)
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=1800, help="training time per recipe")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "race")
    parser.add_argument("--recipes", default=",".join(RECIPES), help=f"comma-separated, of {','.join(RECIPES)}, each optionally +eq")
    parser.add_argument("--data", type=Path, default=SHARED / "tiny-imagenet-val")
    parser.add_argument("--holdout", type=int, default=1000, help="last images of the sorted list, never trained on")
    parser.add_argument("--clothing", type=Path, default=SHARED / "clothing")
    parser.add_argument("--clothing-images", type=int, default=300)
    parser.add_argument("--native-images", type=int, default=40, help="of those, how many the native-size column measures (CPU cost)")
    parser.add_argument("--no-results", action="store_true", help="do not write benchmarks/RESULTS.md")
    parser.add_argument("--probe-steps", type=int, default=0, help="also run the diffusability probe with this many steps (0: no)")
    parser.add_argument("--token-steps", type=int, default=0, help="with --probe-steps: also the token probe of discrete models, this many steps")
    parser.add_argument("--section", default="recipe-race", help="the RESULTS.md section to write (its own markers)")
    parser.add_argument("--title", default="Recipe race (issue 11)")
    parser.add_argument("--diffusers-script", type=Path, help="diffusers' train_autoencoderkl.py, for the diffusers_example recipe")
    parser.add_argument("--example-deps", type=Path, help="a folder with the example's own dependencies (see benchmarks/diffusers_example.py)")
    parser.add_argument("--schedule", default="one recipe at a time", help="how the runs shared the machine, for RESULTS.md")
    parser.add_argument("--train-only", action="store_true", help="train and stop (to share the cores: evaluate with a later call naming all)")
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
    examples = [name for name in names if name in EXAMPLES]
    if examples and not (args.diffusers_script and args.example_deps):
        sys.exit(f"recipe_race: {', '.join(examples)} need --diffusers-script and --example-deps (see benchmarks/diffusers_example.py)")
    train_list, holdout = holdout_split(args.data, args.holdout, args.out)
    trained = {name: train(name, args, train_list) for name in names}
    if args.train_only:
        return
    metrics = evaluate_runs(
        names, args.out, data=args.data, holdout=holdout, clothing=args.clothing, clothing_images=args.clothing_images, native_images=args.native_images
    )
    if args.probe_steps:
        probe(names, args, holdout, metrics)
    (args.out / "race.json").write_text(json.dumps({"trained": trained, "metrics": metrics}, indent=2))
    markdown = table(names, trained, metrics, args)
    print(markdown)
    if not args.no_results:
        write_results(markdown, names, args)


def train(name: str, args, train_list: Path) -> dict:
    common = {"out": args.out, "seconds": args.seconds, "data": args.data, "train_list": train_list}
    if name in EXAMPLES:
        return train_example(name, EXAMPLES[name][1], script=args.diffusers_script, deps=args.example_deps, **common)
    _, configs, overrides = recipe(name)
    return train_for(name, configs, overrides, **common)


def describe(name: str) -> str:
    if name in EXAMPLES:
        return f"- `{name}`: {EXAMPLES[name][0]}{' (`' + ' '.join(EXAMPLES[name][1]) + '`)' if EXAMPLES[name][1] else ''}"
    description, configs, overrides = recipe(name)
    return f"- `{name}`: {description} (`{' + '.join(configs)}`{' ' + ' '.join(overrides) if overrides else ''})"


def _known(name: str) -> bool:
    if name in EXAMPLES:
        return True
    try:
        recipe(name)
    except KeyError:
        return False
    return True


def write_results(markdown: str, names: list[str], args) -> None:
    markers = (f"<!-- {args.section}:start -->", f"<!-- {args.section}:end -->")
    command = f".venv/bin/python benchmarks/recipe_race.py --seconds {args.seconds} --recipes {','.join(names)} --native-images {args.native_images}"
    command += f" --probe-steps {args.probe_steps} --section {args.section}" if args.probe_steps else ""
    command += f" --token-steps {args.token_steps} --title '{args.title}'" if args.token_steps else ""
    command += f" --diffusers-script {args.diffusers_script} --example-deps {args.example_deps}" if args.diffusers_script else ""
    recipes = "\n".join(describe(name) for name in names)
    probe_note = (
        (
            f" The probe: the same tiny diffusion transformer trained {args.probe_steps} steps (rectified flow) on each VAE's "
            "latents of the held-out images; its validation loss (lower: easier latents) and *FID of 64 decoded samples on a random "
            "Inception (plumbing only)."
        )
        if args.probe_steps
        else ""
    )
    if args.token_steps:
        probe_note += (
            f" The token probe: a small causal transformer trained {args.token_steps} steps on each discrete model's code indices of "
            "the held-out images (raster order); its validation NLL per token (lower: easier tokens) and bits per image."
        )
    section = (
        f"{markers[0]}\n## {args.title}\n\nCommand: `{command}`. Machine: {machine()}; no GPU; precision as `fit` picks "
        f"(bf16-mixed where the CPU has native bf16). Each recipe trained {args.seconds} s (Lightning's training timer) on "
        f"{args.data.name} minus its last {args.holdout} sorted files, tiny architecture at 64 px, batch 8, {args.schedule}; "
        f"every result (EMA weights) evaluated on the same held-out images: the {args.holdout} held-out Tiny-ImageNet "
        f"images at 64 px, {args.clothing_images} clothing photos center-cropped at 64 and 128 px, and {args.native_images} "
        f"of them (evenly spaced by name) whole at their native size (mostly 400 x 533, tiled above 512 px as `eval` does; "
        f"ΔE00: mean CIEDE2000 colour difference, bias: mean reconstruction - original per channel in 8-bit levels) "
        f"(MS-SSIM needs 161 px: not reported). *LPIPS runs on a randomly initialised AlexNet (no weights offline): "
        f"plumbing only, not a quality measure. Sorted by Tiny-ImageNet PSNR.{probe_note}\n\n{markdown}\n\n{recipes}\n{markers[1]}"
    )
    replace_section(section, markers)


if __name__ == "__main__":
    main()
