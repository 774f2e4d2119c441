"""`vaetrain eval | probe | recon | export | convert`: argparse front ends of plain functions. Their shared
options (images, tiling, the probe) are `vaetrain.cli.options`, so the same thing has the same name everywhere.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

from vaetrain.checkpoints.references import check_model_reference, held_out_images, load_autoencoder, recorded_pixel_format, trained_clip_length
from vaetrain.cli.options import MODEL_HELP, data_loading, image_options, probe, probe_options, resolve_precision, sample_set, tiling_options
from vaetrain.errors import ConfigError
from vaetrain.evaluation.diffusability import before_after
from vaetrain.evaluation.evaluate import EvalOptions, evaluate, run_dir_of
from vaetrain.evaluation.protocol import PROTOCOLS
from vaetrain.evaluation.recon import reconstruct_files
from vaetrain.evaluation.reconstruct import TilingConfig
from vaetrain.evaluation.report import write_report
from vaetrain.evaluation.results import METRICS
from vaetrain.export.diffusers_folder import export_checkpoint
from vaetrain.export.formats import convert
from vaetrain.export.model_card import push_to_hub
from vaetrain.models.latent_space import CONVENTIONS


def run_eval(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="vaetrain eval", description="Evaluate autoencoders on the same images: writes OUT/metrics.json, metrics.csv and report.html."
    )
    parser.add_argument("models", nargs="+", metavar="MODEL", help=MODEL_HELP)
    image_options(
        parser,
        path_help="image folder, HF dataset (id or folder) or shard pattern (required)",
        resolution_help="center-crop size (default 256) or 'native'",
        max_images=None,
    )
    parser.add_argument("--metrics", default=",".join(METRICS), help=f"comma-separated subset of {','.join(METRICS)}")
    parser.add_argument("--out", default="eval", help="output folder (default: ./eval)")
    parser.add_argument("--lpips-network", choices=["alex", "vgg"], default="alex")
    parser.add_argument(
        "--backbones",
        choices=["pretrained", "random"],
        default="pretrained",
        help="random: LPIPS/Inception with untrained weights, for offline smoke runs only",
    )
    parser.add_argument("--samples", type=int, default=4, help="images shown in the report")
    parser.add_argument("--run", help="training run folder whose curves the report plots (default: found from a checkpoint)")
    parser.add_argument("--probe", action="store_true", help="also run the diffusability probe (see vaetrain probe) and report it")
    parser.add_argument(
        "--held-out", action="store_true", help="the images the first MODEL's training run held out (a vaetrain checkpoint), instead of --data.path"
    )
    parser.add_argument("--protocol", choices=sorted(PROTOCOLS), help="a fixed protocol: " + "; ".join(f"{k}: {p.description}" for k, p in PROTOCOLS.items()))
    parser.add_argument(
        "--fid-reference", help="with --protocol: the originals' Inception statistics file (default OUT/PROTOCOL-inception.pt; reused when present)"
    )
    probe_options(parser)
    tiling_options(parser)
    args = parser.parse_args(argv)
    protocol = PROTOCOLS[args.protocol] if args.protocol else None
    if protocol is not None and (args.data_resolution is not None or args.metrics != ",".join(METRICS) or args.held_out):
        raise ConfigError(
            f"eval: --protocol {protocol.name} fixes the crop, the resolution and the metrics; leave --data.resolution, --metrics and --held-out out"
        )
    if args.fid_reference and protocol is None:
        raise ConfigError("eval: --fid-reference goes with --protocol (the statistics are only reusable under one protocol)")
    images = sample_set(args, 256 if args.data_resolution is None else args.data_resolution, args.models)
    if protocol is not None and images is not None:
        images = replace(images, resolution=protocol.resolution, eval_crop=protocol.eval_crop)
        args.metrics = ",".join(protocol.metrics)
    part, record = "all", None
    if args.held_out:
        if images is not None:
            raise ConfigError("eval: --held-out and --data.path name the images twice; give one")
        images, part, record = held_out_images(args.models[0])
    if images is None:
        raise ConfigError("eval: --data.path is required (the images to evaluate on), or --held-out")
    options = EvalOptions(
        metrics=tuple(m.strip() for m in args.metrics.split(",") if m.strip()),
        part=part,
        max_images=args.data_max_images,
        batch_size=args.data_batch_size,
        num_workers=args.data_num_workers,
        lpips_network=args.lpips_network,
        backbones=args.backbones,
        tiling=TilingConfig(tile_size=args.tile_size, enabled=not args.no_tiling),
        report_samples=args.samples,
        device=args.device,
        protocol=args.protocol,
        fid_reference=(args.fid_reference or str(Path(args.out) / f"{args.protocol}-inception.pt")) if protocol else None,
        use_ema=not args.no_ema,
        precision=resolve_precision(args.precision, args.device),
    )
    results = evaluate(args.models, images, options, args.out, run_dir=args.run)
    if args.probe:
        rows = probe(args, images)
        write_report(results, Path(args.out) / "report.html", run_dir=args.run or run_dir_of(args.models), probe_rows=rows)
    for result in results:
        values = result.values
        shown = ", ".join(f"{k} {values[k]:.4g}" for k in (*METRICS, "scaling_factor") if values.get(k) is not None)
        print(f"{values['model']}: {shown}")
    print(f"wrote {args.out}/metrics.json, metrics.csv, report.html")
    if record is not None:
        _held_out_summary(args.models[0], record, results[0].values, args.out)
    return 1 if any(result.errors for result in results) else 0


def _held_out_summary(checkpoint: str, record, values: dict, out: str) -> None:
    """Three lines: what was trained, how well it reconstructs the images it never saw, where to look."""
    autoencoder = record.settings.get("autoencoder", {})
    shape = f"{autoencoder.get('family', 'kl')} autoencoder {autoencoder.get('block_out_channels')}, {autoencoder.get('latent_channels')} latent channels"
    run = Path(checkpoint).resolve().parent.parent
    print(f"trained: {shape}, {record.counters.generator_steps} generator steps ({checkpoint})")
    print(f"held out: PSNR {values['psnr']:.2f} dB, SSIM {values['ssim']:.4f} on {values['images']} images it never trained on, at {values['resolution']} px")
    print(f"look at: {Path(out) / 'report.html'} and the diffusers folder {run / 'diffusers'}")


def run_probe(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="vaetrain probe",
        description="How easily a diffusion model learns each VAE's latents: "
        "the same small diffusion transformer trained with the same budget on each, its validation loss and samples.",
    )
    parser.add_argument("models", nargs="+", metavar="MODEL", help=MODEL_HELP)
    parser.add_argument(
        "--baseline",
        metavar="MODEL",
        help="the VAE before (end-to-end) tuning: probed with the same budget first, and every model's reconstruction measured on the "
        "probe's images; prints a before/after table",
    )
    image_options(parser, path_help="images to encode (required)", resolution_help="center-crop size (default 256)", max_images=None)
    probe_options(parser)
    parser.add_argument("--out", default="probe", help="output folder (default: ./probe); an eval folder gets the figures in its metrics.json")
    parser.add_argument("--backbones", choices=["pretrained", "random"], default="pretrained", help="FID's Inception; random: offline plumbing only")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--no-ema", action="store_true", help="a checkpoint's trained weights instead of its EMA")
    args = parser.parse_args(argv)
    images = sample_set(args, 256 if args.data_resolution is None else args.data_resolution, args.models)
    if images is None:
        raise ConfigError("probe: --data.path is required (the images to encode)")
    rows = probe(args, images)
    for row in rows:
        fid = f", sample FID {row['probe_fid']:.1f}" if row["probe_fid"] is not None else ""
        token = f", token NLL {row['token_nll']:.4f} nats ({row['token_bits_per_image']:.0f} bits/image)" if row.get("token_nll") is not None else ""
        print(f"{row['model']}: validation flow-matching loss {row['probe_validation_loss']:.4f}{fid}{token} ({row['probe_seconds']:.0f} s)")
    if args.baseline:
        print(before_after(rows))
    print(f"wrote {args.out}/probe.json")
    return 0


def run_recon(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="vaetrain recon", description="Reconstruct images or folders to PNG, videos to mp4 (a Wan model's chunk by chunk, in bounded memory)."
    )
    parser.add_argument("model", metavar="MODEL", help=MODEL_HELP)
    parser.add_argument("inputs", nargs="+", metavar="IN", help="image files or folders (recursive)")
    parser.add_argument("--out", required=True, help="output folder; IN's relative layout is kept")
    parser.add_argument("--side-by-side", action="store_true", help="write input | reconstruction in one PNG")
    tiling_options(parser)
    args = parser.parse_args(argv)
    check_model_reference(args.model)
    model = load_autoencoder(args.model, use_ema=not args.no_ema)
    tiling = TilingConfig(tile_size=args.tile_size, enabled=not args.no_tiling)
    pixels = recorded_pixel_format(args.model)  # the model's training format (8-bit RGB when none is recorded)
    settings = dict(side_by_side=args.side_by_side, tiling=tiling, device=args.device, pixels=pixels, longest_clip=trained_clip_length(args.model))
    written, bad = reconstruct_files(model, args.inputs, args.out, precision=resolve_precision(args.precision, args.device), **settings)
    print(f"wrote {written} reconstructions to {args.out}" + (f"; {len(bad)} unusable files skipped" if bad else ""))
    for name, reason in bad:
        print(f"vaetrain recon: skipped {name}: {reason}", file=sys.stderr)
    return 0


def run_export(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="vaetrain export", description="Export a training checkpoint as a diffusers folder.")
    parser.add_argument("checkpoint", help="a vaetrain .ckpt file")
    parser.add_argument("out", help="output folder (created; replaced if it exists)")
    image_options(
        parser,
        path_help="images to measure the latent scale on (default: the training images the checkpoint records)",
        resolution_help="center-crop size (default: the training resolution, else 256)",
        max_images=256,
    )
    parser.add_argument("--no-ema", action="store_true", help="export the trained weights, not the EMA")
    parser.add_argument(
        "--latents",
        choices=sorted(CONVENTIONS),
        default=None,
        help="latent normalisation fields to write: " + "; ".join(f"{k}: {v}" for k, v in CONVENTIONS.items()) + " (default: the architecture's)",
    )
    parser.add_argument("--push-to-hub", metavar="REPO", help="then upload the folder to this Hugging Face model repo (owner/name)")
    parser.add_argument("--private", action="store_true", help="with --push-to-hub: create the repo private")
    args = parser.parse_args(argv)
    images = sample_set(args, args.data_resolution or 256)
    out = export_checkpoint(
        args.checkpoint,
        args.out,
        images=images,
        resolution=args.data_resolution,
        max_images=args.data_max_images,
        use_ema=not args.no_ema,
        latents=args.latents,
        loading=data_loading(args),
    )
    print(f"exported {args.checkpoint} -> {out}")
    if args.push_to_hub:
        print(f"pushed {out} -> {push_to_hub(out, args.push_to_hub, private=args.private)}")
    return 0


def run_convert(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="vaetrain convert",
        description="Convert between the original LDM/SD VAE format (.ckpt/.safetensors) and a diffusers folder. "
        "IN is an LDM file (-> diffusers folder OUT) or a diffusers folder, Hub id or vaetrain checkpoint "
        "(-> LDM file OUT ending in .safetensors or .ckpt).",
    )
    parser.add_argument("input", metavar="IN")
    parser.add_argument("out", metavar="OUT")
    parser.add_argument("--prefix", default="", help="key prefix of the written LDM file, e.g. 'first_stage_model.'")
    parser.add_argument("--no-ema", action="store_true", help="a checkpoint's trained weights instead of its EMA")
    args = parser.parse_args(argv)
    out = convert(args.input, args.out, prefix=args.prefix, use_ema=not args.no_ema)
    print(f"converted {args.input} -> {out}")
    return 0
