"""`vaetrain eval`: every model on the same images, one pass each, into metrics.json, metrics.csv and report.html.

Models are loaded by `vaetrain.checkpoints.load_autoencoder` (any model reference: a vaetrain `.ckpt`, a
diffusers folder, an LDM/SD file, a Hub id), images read by `evaluation_samples`: no data module, no training code.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from vaetrain.checkpoints.references import load_autoencoder, trained_clip_length
from vaetrain.data.sample_sets import DEFAULT_BATCH_SIZE, SampleSet, evaluation_samples
from vaetrain.data.sources.spec import Part
from vaetrain.errors import ConfigError, PretrainedWeightsUnavailable
from vaetrain.evaluation.latents import LatentAccumulator
from vaetrain.evaluation.measure import autoencoder_pairs, measure
from vaetrain.evaluation.metric_networks import build_inception, build_lpips_metric, build_video_features
from vaetrain.evaluation.protocol import PROTOCOLS, FidReference
from vaetrain.evaluation.reconstruct import TilingConfig, pad_to_multiple, resolve_device
from vaetrain.evaluation.report import write_report
from vaetrain.evaluation.results import METRICS, TOKEN_USAGE, ModelResult, write_csv
from vaetrain.evaluation.speed import check_fp16_decode, measure_speed
from vaetrain.evaluation.stream import warn_if_longer
from vaetrain.evaluation.temporal import frame_chunk_of
from vaetrain.frames import as_frames
from vaetrain.losses.perceptual import for_channels
from vaetrain.models.autoencoder import downsampling_factor
from vaetrain.models.families import family_of


@dataclass
class EvalOptions:
    """How models are measured; which images (and at which resolution: a center-crop size, as published
    tables use, or "native" to keep every image whole, padded and tiled) is the `SampleSet`'s business."""

    metrics: tuple[str, ...] = METRICS
    part: Part = "all"
    """Which part of the images' source: all, or a training run's held-out (val) part."""
    max_images: int | None = None
    batch_size: int = DEFAULT_BATCH_SIZE  # fit's `data.batch_size` and `data.num_workers` defaults
    num_workers: int | None = None
    lpips_network: Literal["alex", "vgg"] = "alex"
    backbones: Literal["pretrained", "random"] = "pretrained"  # random: offline smoke runs only
    tiling: TilingConfig = field(default_factory=TilingConfig)
    report_samples: int = 4
    device: str = "auto"
    protocol: str | None = None
    """The protocol the images were cut by (`evaluation.protocol.PROTOCOLS`), written beside every number."""
    fid_reference: str | None = None
    """A file of the originals' Inception statistics: read when it exists, else written by the first model."""
    use_ema: bool = True
    """A vaetrain checkpoint's EMA weights (when it has them); False: its trained weights (`--no-ema`)."""
    precision: str = "32"
    """The autoencoder's precision: "32" or "bf16" (autocast; `eval --precision auto` picks what `fit` would)."""

    def __post_init__(self) -> None:
        unknown = sorted(set(self.metrics) - set(METRICS))
        if unknown:
            raise ConfigError(f"--metrics: unknown {', '.join(unknown)}; choose from {', '.join(METRICS)}")


@dataclass
class Networks:
    """LPIPS and Inception, built once for all models; None where unavailable (the error says why)."""

    lpips: nn.Module | None = None
    inception: nn.Module | None = None
    video_features: nn.Module | None = None  # rFVD's I3D, for clips
    errors: list[str] = field(default_factory=list)


def build_networks(
    options: EvalOptions, lpips: nn.Module | None = None, inception: nn.Module | None = None, clips: bool = False, video_features: nn.Module | None = None
) -> Networks:
    """Pretrained weights that cannot be had offline cost their metric only: the others still run."""
    networks = Networks(lpips=lpips, inception=inception, video_features=video_features)
    if "rfvd" in options.metrics and clips and video_features is None:
        try:
            networks.video_features = build_video_features(options.backbones)
        except PretrainedWeightsUnavailable as error:
            networks.errors.append(str(error))
    if "lpips" in options.metrics and lpips is None:
        try:
            networks.lpips = build_lpips_metric(options.lpips_network, options.backbones)
        except PretrainedWeightsUnavailable as error:
            networks.errors.append(str(error))
    if "rfid" in options.metrics and inception is None:
        try:
            networks.inception = build_inception(options.backbones)
        except PretrainedWeightsUnavailable as error:
            networks.errors.append(str(error))
    return networks


def evaluate_model(
    reference: str, model: nn.Module, images: SampleSet, options: EvalOptions, networks: Networks, fid_reference: dict | None = None
) -> ModelResult:
    """One pass over the images: reconstructions feed the metrics, posteriors the latent statistics."""
    device = resolve_device(options.device)
    model = model.to(device)
    resolution, pixels = images.resolution, images.pixels
    if resolution != "native" and resolution % downsampling_factor(model):
        raise ConfigError(f"--data.resolution {resolution} is not divisible by {reference}'s downsampling factor {downsampling_factor(model)}")
    if family_of(model).image_channels(model)[0] != pixels.channels:
        raise ConfigError(
            f"{reference} reads {family_of(model).image_channels(model)[0]} channels, but the images are read as {pixels.channels} (data.channels)"
        )
    lpips_channels = None if pixels.channels in (1, 3) else "each"  # N channels: each one replicated to RGB, averaged
    lpips = networks.lpips if networks.lpips is not None and "lpips" in options.metrics else None
    lpips = for_channels(lpips, pixels.channels, lpips_channels, key="eval LPIPS")
    lpips = lpips.to(device) if lpips is not None else None
    latents = LatentAccumulator(sample=True)
    samples: list[dict] = []
    timing: dict = {}
    family = family_of(model)
    usage = family.token_usage(model)
    usage = usage.to(device) if usage is not None else None

    def each(batch_images: torch.Tensor, reconstruction: torch.Tensor, posterior) -> None:
        latents.update(posterior)
        if usage is not None:
            usage.update(family.tokens(model, posterior.mean))
        if not timing:  # timed on the first batch, at the evaluated resolution
            inputs = batch_images if family_of(model).video else as_frames(batch_images)  # an image model: per frame
            timing["speed"] = measure_speed(model, pad_to_multiple(inputs, downsampling_factor(model))[0])
            timing["fp16"] = check_fp16_decode(model, posterior.mode())
        samples.extend({"original": _to_uint8(o), "reconstruction": _to_uint8(r)} for o, r in zip(batch_images, reconstruction))
        del samples[options.report_samples :]

    loader = evaluation_samples(images, part=options.part, max_images=options.max_images, batch_size=options.batch_size, num_workers=options.num_workers)
    measured = measure(
        loader,
        autoencoder_pairs(model, options.tiling, options.precision),
        pixels=pixels,
        ms_ssim="ms_ssim" in options.metrics,
        fid_features=networks.inception if "rfid" in options.metrics else None,
        fid_reference=fid_reference,
        fvd_features=networks.video_features if "rfvd" in options.metrics else None,
        frame_chunk=frame_chunk_of(model),
        progress=f"eval {Path(str(reference)).name}",
        lpips=lpips,
        device=device,
        each=each,
    )
    bad_files = measured.bad_files
    if not measured.images:
        raise ConfigError(f"data.path '{images.source.path}': no usable images to evaluate ({len(bad_files)} bad files)")
    speed, fp16 = timing["speed"], timing["fp16"]
    statistics, computed = latents.result(), measured.values
    values = {
        "model": str(reference),
        **{name: computed.get(name) if name in options.metrics else None for name in METRICS},
        "flicker": computed.get("flicker"),  # clips only, as the two below
        "psnr_chunks": [computed[k] for k in sorted((k for k in computed if k.startswith("psnr_chunk")), key=lambda k: int(k[10:]))] or None,
        "temporal_drift": computed.get("temporal_drift"),
        "delta_e": computed.get("delta_e"),  # RGB only
        "bias_channels": [computed[f"bias_c{c}"] for c in range(pixels.channels)],
        "kl": statistics.kl,
        "latent_mean": statistics.channel_mean,
        "latent_std": statistics.channel_std,
        "scaling_factor": statistics.scaling_factor,
        "shift_factor": statistics.shift_factor,
        **(usage.compute() if usage is not None else dict.fromkeys(TOKEN_USAGE)),
        "encode_img_per_s": speed.encode_img_per_s,
        "decode_img_per_s": speed.decode_img_per_s,
        "peak_memory_mb": speed.peak_memory_mb,
        "fp16_max_abs_activation": fp16.max_abs_activation,
        "fp16_nonfinite": fp16.nonfinite,
        "images": statistics.count,
        "resolution": resolution,
        "device": device.type,
        "lpips_network": options.lpips_network if lpips is not None else None,
        "lpips_channels": lpips_channels or ("replicated" if pixels.channels == 1 else "rgb"),
        "psnr_channels": [computed[f"psnr_c{c}"] for c in range(pixels.channels)],
        "ssim_channels": [computed[f"ssim_c{c}"] for c in range(pixels.channels)],
        "channels": pixels.channels,
        "bit_depth": pixels.bit_depth,
        "display_channels": pixels.display_channels(),
        "backbones": options.backbones,
        "bad_files": len(bad_files),
        "protocol": PROTOCOLS[options.protocol].description if options.protocol else None,
    }
    if bad_files:
        examples = "; ".join(f"{name}: {reason}" for name, reason in bad_files[:3])
        print(f"vaetrain eval: {len(bad_files)} unusable files skipped ({examples})", file=sys.stderr)
    return ModelResult(values, samples, statistics.channel_histograms, list(networks.errors), measured.fid_reference)


def evaluate(
    models: list[str],
    images: SampleSet,
    options: EvalOptions,
    out_dir: str | Path,
    *,
    lpips: nn.Module | None = None,
    inception: nn.Module | None = None,
    run_dir: str | Path | None = None,
    video_features: nn.Module | None = None,
) -> list[ModelResult]:
    """Evaluates every model (loaded one at a time by `load_autoencoder`) on the same images and writes
    OUT/metrics.json, metrics.csv, report.html. `lpips`/`inception` inject the networks (tests: random
    weights, no download)."""
    if "rfvd" in options.metrics and images.clip is None and set(options.metrics) != set(METRICS):
        raise ConfigError("--metrics rfvd measures clips: give --data.frames (and videos), or leave rfvd out")
    networks = build_networks(options, lpips, inception, clips=images.clip is not None, video_features=video_features)
    for error in networks.errors:
        print(f"vaetrain eval: {error}", file=sys.stderr)
    cache = FidReference(options.fid_reference, options.protocol or "custom") if options.fid_reference and networks.inception is not None else None
    state, results = cache.load() if cache is not None else None, []
    for reference in models:
        if images.clip is not None:
            warn_if_longer(images.clip.frames, trained_clip_length(reference), str(reference))
        results.append(evaluate_model(reference, load_autoencoder(reference, use_ema=options.use_ema), images, options, networks, state))
        if cache is not None and state is None and results[-1].fid_reference is not None:
            state = results[-1].fid_reference
            cache.save(state)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = [result.values | {"errors": result.errors} for result in results]
    (out_dir / "metrics.json").write_text(json.dumps(rows, indent=2) + "\n")
    write_csv(rows, out_dir / "metrics.csv")
    write_report(results, out_dir / "report.html", run_dir=run_dir or run_dir_of(models))
    return results


def run_dir_of(models: list[str]) -> Path | None:
    """RUN/checkpoints/x.ckpt or RUN/diffusers names its training run: the report then plots its logs."""
    for reference in models:
        path = Path(reference)
        run = path.parent.parent if path.suffix == ".ckpt" else path.parent
        if path.exists() and (run / "lightning_logs").is_dir():
            return run
    return None


def _to_uint8(image: torch.Tensor) -> torch.Tensor:
    return ((image.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu()
