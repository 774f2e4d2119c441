"""The autoencoder families side by side on this machine (issue 13), in one run:

    .venv/bin/python benchmarks/families.py --seconds 600 --out runs/families

1. `kl`: the tiny preset (configs/tiny.yaml, AutoencoderKL f8c4) trained `--seconds` of training time; it is
   also the teacher of 3.
2. `dc`: configs/dc-ae-tiny.yaml (AutoencoderDC f32c32, phase 1: L1, no GAN) trained as long.
3. `taesd`: configs/taesd-tiny.yaml (AutoencoderTiny) distilled from `kl` for as long.
Then, on the held-out Tiny-ImageNet images and the clothing photos (never trained on): `vaetrain eval` of
all three (PSNR/SSIM of encode -> decode), and the student against its teacher: the teacher's latents of
the held-out images decoded by the teacher and by the student (PSNR of each against the image, and of one
against the other), and both decoders' time on the same latent batch (median of `--repeats`), as a ratio.
Writes a section of benchmarks/RESULTS.md. Data split and training as benchmarks/recipe_race.py does.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from harness import EVALS, ROOT, SHARED, evaluate_runs, holdout_split, machine, replace_section, train_for
from vaetrain.data.sample_sets import SampleSet, evaluation_samples, pixels_of
from vaetrain.data.sources.spec import SourceSpec
from vaetrain.evaluation.measure import autoencoder_pairs, measure
from vaetrain.models.autoencoder import load_pretrained_autoencoder
from vaetrain.models.families import decode, encode
from vaetrain.models.latent_space import pipeline_normalize

RUNS = {
    "kl": ("configs/tiny.yaml", "AutoencoderKL f8c4 (configs/tiny.yaml: L1 + KL + adaptive PatchGAN from step 200)", []),
    "dc": ("configs/dc-ae-tiny.yaml", "AutoencoderDC f32c32 (configs/dc-ae-tiny.yaml, phase 1: L1, no GAN)", []),
}


@torch.no_grad()
def student_against_teacher(teacher_dir: Path, student_dir: Path, data: Path, holdout: Path, repeats: int) -> dict:
    teacher, student = load_pretrained_autoencoder(teacher_dir), load_pretrained_autoencoder(student_dir)
    images = SampleSet(SourceSpec(path=str(data), file_list=str(holdout)), resolution=64)

    def teacher_latents(pixels):  # what the student decodes
        return pipeline_normalize(teacher.config, encode(teacher, pixels).mode())

    pairs = {  # (reference, reconstruction, posterior) per batch: each comparison is one pass of the one measuring loop
        "teacher": autoencoder_pairs(teacher),
        "student": lambda pixels: (pixels, decode(student, teacher_latents(pixels)).clamp(-1, 1), None),
        "student_vs_teacher": lambda pixels: (
            decode(teacher, encode(teacher, pixels).mode()).clamp(-1, 1),
            decode(student, teacher_latents(pixels)).clamp(-1, 1),
            None,
        ),
    }
    result = {name: measure(evaluation_samples(images, part="all", batch_size=64, num_workers=0), pair).values for name, pair in pairs.items()}
    result = {name: {k: float(values[k]) for k in ("psnr", "ssim")} for name, values in result.items()}
    batch_latents = encode(
        teacher, next(pixels_of(b) for b in evaluation_samples(images, part="all", batch_size=64, num_workers=0) if len(pixels_of(b)))
    ).mode()
    times = {}
    for name, model, latents in (("teacher", teacher, batch_latents), ("student", student, pipeline_normalize(teacher.config, batch_latents))):
        decode(model, latents)  # warm-up
        samples = []
        for _ in range(repeats):
            started = time.perf_counter()
            decode(model, latents)
            samples.append(time.perf_counter() - started)
        times[name] = statistics.median(samples)
    parameters = {name: sum(p.numel() for p in m.decoder.parameters()) for name, m in (("teacher", teacher), ("student", student))}
    return result | {
        "decode_seconds": times,
        "decode_speedup": times["teacher"] / times["student"],
        "batch": len(batch_latents),
        "decoder_parameters": parameters,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=600, help="training time per model")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "families")
    parser.add_argument("--data", type=Path, default=SHARED / "tiny-imagenet-val")
    parser.add_argument("--holdout", type=int, default=1000)
    parser.add_argument("--clothing", type=Path, default=SHARED / "clothing")
    parser.add_argument("--clothing-images", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-results", action="store_true")
    args = parser.parse_args()
    args.out = args.out.resolve()
    args.out.mkdir(parents=True, exist_ok=True)
    train_list, holdout = holdout_split(args.data, args.holdout, args.out)
    where = {"out": args.out, "seconds": args.seconds, "data": args.data, "train_list": train_list}
    trained = {name: train_for(name, [config], overrides, **where) for name, (config, _, overrides) in RUNS.items()}
    teacher = args.out / "kl" / "diffusers"
    trained["taesd"] = train_for("taesd", ["configs/taesd-tiny.yaml"], [f"--model.loss.distillation.teacher={teacher}"], **where)
    metrics = evaluate_runs(["kl", "dc", "taesd"], args.out, data=args.data, holdout=holdout, clothing=args.clothing, clothing_images=args.clothing_images)
    distilled = student_against_teacher(teacher, args.out / "taesd" / "diffusers", args.data, holdout, args.repeats)
    (args.out / "families.json").write_text(json.dumps({"trained": trained, "metrics": metrics, "distilled": distilled}, indent=2))
    markdown = tables(trained, metrics, distilled)
    print(markdown)
    if not args.no_results:
        write(markdown, args)


def tables(trained: dict, metrics: dict, distilled: dict) -> str:
    descriptions = {name: text for name, (_, text, _) in RUNS.items()} | {"taesd": "AutoencoderTiny distilled from `kl` (configs/taesd-tiny.yaml)"}
    lines = ["| model | steps | " + " | ".join(f"{label} PSNR / SSIM" for label, _, _ in EVALS) + " |", "|---|---|" + "---|" * len(EVALS)]
    for name in ("kl", "dc", "taesd"):
        cells = " | ".join(f"{metrics[name][label]['psnr']:.2f} / {metrics[name][label]['ssim']:.4f}" for label, _, _ in EVALS)
        lines.append(f"| `{name}`: {descriptions[name]} | {trained[name]['generator_steps']} | {cells} |")
    d = distilled
    lines += [
        "",
        f"| decoder of the teacher's latents (held-out Tiny-ImageNet, 64 px) | PSNR / SSIM vs image | decode time, batch {d['batch']} | decoder parameters |",
        "|---|---|---|---|",
    ]
    for name in ("teacher", "student"):
        lines.append(
            f"| {name} | {d[name]['psnr']:.2f} / {d[name]['ssim']:.4f} | {d['decode_seconds'][name] * 1000:.1f} ms | "
            f"{d['decoder_parameters'][name] / 1e6:.2f} M |"
        )
    lines.append(f"\nStudent decode vs teacher decode: PSNR {d['student_vs_teacher']['psnr']:.2f} dB; the student decodes {d['decode_speedup']:.2f}x faster.")
    return "\n".join(lines)


def write(markdown: str, args) -> None:
    markers = ("<!-- families:start -->", "<!-- families:end -->")
    section = (
        f"{markers[0]}\n## Autoencoder families: KL, DC-AE, a distilled tiny autoencoder (issue 13)\n\nCommand: "
        f"`.venv/bin/python benchmarks/families.py --seconds {args.seconds}`. Machine: {machine()}; no GPU; precision as `fit` "
        f"picks. Each model trained {args.seconds} s of training time (Lightning's timer) on {args.data.name} minus its last "
        f"{args.holdout} sorted files at 64 px, batch 8, one at a time; evaluated on the held-out images and {args.clothing_images} "
        f"clothing photos (EMA weights, encode -> decode).\n\n{markdown}\n{markers[1]}"
    )
    replace_section(section, markers)


if __name__ == "__main__":
    main()
