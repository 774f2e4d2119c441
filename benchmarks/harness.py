"""What every benchmark that trains and measures shares: the sorted-name hold-out split, launching `vaetrain
fit` / `eval` / `probe` on presets (layered `--config` files), reading a run's counters through the one
checkpoint schema, the machine's description, and writing a marked section of benchmarks/RESULTS.md.
"""

from __future__ import annotations

import json
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

from vaetrain.checkpoints.schema import load_checkpoint
from vaetrain.data import list_images

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # the checkout's top-level `fixtures` package (generated inputs), imported after this module
RESULTS = ROOT / "benchmarks" / "RESULTS.md"
SHARED = ROOT.parent / "shared" / "data"
EVALS = (("tiny_imagenet_64", "holdout", 64), ("clothing_64", "clothing", 64), ("clothing_128", "clothing", 128), ("clothing_native", "clothing", "native"))
"""(column, image set, center-crop size or native) of every evaluation: the held-out Tiny-ImageNet images and
the clothing photos, cropped and whole at their own size (400 x 533 mostly; tiled above 512 px as `eval` does)."""


def vaetrain(*args: str) -> None:
    """The checkout's `vaetrain` command, failing loudly."""
    subprocess.run([str(ROOT / ".venv" / "bin" / "vaetrain"), *args], check=True, cwd=ROOT)


def machine() -> str:
    return f"{platform.machine()} {platform.processor() or 'cpu'}, {torch.get_num_threads()} threads, torch {torch.__version__}"


def holdout_split(data: Path, holdout: int, out: Path) -> tuple[Path, Path]:
    """File lists of `data`'s images sorted by name: all but the last `holdout` (train), and those (never
    trained on)."""
    files = [path.relative_to(data).as_posix() for path in list_images(data)]
    train, held = out / "train.txt", out / "holdout.txt"
    train.write_text("\n".join(files[:-holdout]) + "\n")
    held.write_text("\n".join(files[-holdout:]) + "\n")
    return train, held


def train_for(name: str, configs: list[str], overrides: list[str], *, out: Path, seconds: int, data: Path, train_list: Path) -> dict:
    """`vaetrain fit --config C1 --config C2 ... OVERRIDES` for `seconds` of training time (Lightning's timer,
    saved in checkpoints) into OUT/NAME: skipped when done, resumed when interrupted; returns its generator
    steps (read through the checkpoint record) and times."""
    run = out / name
    done = run / "done.json"
    if done.is_file():
        return json.loads(done.read_text())
    resume = ["--ckpt_path=last"] if (run / "checkpoints" / "last.ckpt").is_file() else []
    started = time.time()
    vaetrain(
        "fit",
        *[arg for config in configs for arg in ("--config", config)],
        f"--data.path={data}",
        f"--data.file_list={train_list}",
        "--data.val_size=16",
        "--trainer.limit_val_batches=0",
        "--trainer.max_steps=-1",
        f"--trainer.max_time=00:00:{seconds // 60:02d}:{seconds % 60:02d}",
        f"--trainer.default_root_dir={run}",
        "--trainer.enable_progress_bar=false",
        "--checkpoint.every_n_train_steps=500",
        "--grid.every_n_steps=500",
        "--export.latent_statistics_images=64",
        *overrides,
        *resume,
    )
    checkpoint, record = load_checkpoint(run / "checkpoints" / "last.ckpt")
    result = {
        "generator_steps": record.counters.generator_steps,
        "train_seconds": checkpoint["callbacks"].get("Timer", {}).get("time_elapsed", {}).get("train"),
        "wall_seconds": round(time.time() - started, 1),
    }
    done.write_text(json.dumps(result))
    return result


def evaluate_runs(
    names: list[str], out: Path, *, data: Path, holdout: Path, clothing: Path, clothing_images: int, native_images: int | None = None
) -> dict[str, dict[str, dict]]:
    """One `vaetrain eval` per image set of `EVALS` with every run's exported EMA weights: the same images for all.
    `native_images`: how many clothing photos the native-size column measures (evenly spaced by name, as
    `--data.max_images` picks; a 400 x 533 photo costs as much as 52 64-px crops), `clothing_images` when None."""
    metrics: dict[str, dict[str, dict]] = {name: {} for name in names}
    for label, source, resolution in EVALS:
        images = (
            ["--data.path", str(data), "--data.file_list", str(holdout)]
            if source == "holdout"
            else ["--data.path", str(clothing), "--data.max_images", str(native_images if resolution == "native" and native_images else clothing_images)]
        )
        target = out / f"eval_{label}"
        vaetrain(
            "eval",
            *[str(out / n / "diffusers") for n in names],
            *images,
            "--data.resolution",
            str(resolution),
            "--data.batch_size",
            "16" if resolution != "native" else "1",
            "--metrics",
            "psnr,ssim,lpips",
            "--backbones",
            "random",
            "--out",
            str(target),
        )
        for row in json.loads((target / "metrics.json").read_text()):
            keys = ("psnr", "ssim", "lpips", "images", "delta_e", "bias_channels", "codebook_usage", "codebook_perplexity", "bits_per_image")
            metrics[Path(row["model"]).parent.name][label] = {k: row.get(k) for k in keys}
    return metrics


def replace_section(section: str, markers: tuple[str, str]) -> None:
    """Writes `section` (starting and ending with `markers`) into RESULTS.md in place of its previous version."""
    text = RESULTS.read_text() if RESULTS.is_file() else "# Benchmark results\n"
    if markers[0] in text:
        start, end = text.index(markers[0]), text.index(markers[1]) + len(markers[1])
        text = text[:start] + section + text[end:]
    else:
        text = text.rstrip() + "\n\n" + section + "\n"
    RESULTS.write_text(text)
