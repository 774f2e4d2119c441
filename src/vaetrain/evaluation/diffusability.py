"""`vaetrain probe` (and `eval --probe`): every VAE's latents get the same diffusion probe (see `probe`); the
samples are decoded and compared with the real images by FID. Every VAE's latents are standardised alike,
per channel by statistics of the probe's own images (`probe.standardisation`), whatever its config's
scaling fields say, so the losses compare across any VAEs (vaetrain's exports and third-party ones). Writes OUT/probe.json and a sample grid per
model, and adds the figures to OUT/metrics.json's rows when `eval` wrote one there."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from torch import nn
from torchvision.utils import make_grid, save_image

from vaetrain.checkpoints.references import load_autoencoder
from vaetrain.data.decoding.pixels import PixelFormat
from vaetrain.data.sample_sets import Loading, SampleSet, evaluation_samples, pixels_of
from vaetrain.errors import ConfigError
from vaetrain.evaluation.diffusability_probe import ProbeConfig, standardisation, train_probe
from vaetrain.evaluation.metrics import fid_metric, to_uint8
from vaetrain.evaluation.reconstruct import resolve_device
from vaetrain.evaluation.token_probe import TokenProbeConfig, tokens_of, train_token_probe
from vaetrain.frames import as_frames
from vaetrain.models.families import decode, family_of
from vaetrain.models.families import encode as encode_latents

PROBE_FILE = "probe.json"


@torch.no_grad()
def encode(
    model, images: SampleSet, max_images: int | None, device: torch.device, seed: int, loading: Loading = Loading()
) -> tuple[torch.Tensor, torch.Tensor, tuple]:
    """(latent samples standardised per channel by their own statistics, the images in [-1, 1], the
    (shift, scale, latent frames) that standardised them) of up to `max_images` images at a fixed size.
    Video latents (N, C, T, h, w) are probed frame by frame, (N T, C, h, w): diffusers' DiT, the probe's
    transformer, unpatchifies square token grids only, so it does not see time; a generated latent frame
    decodes as a one-frame clip (what a causal video VAE makes of a clip's first frame)."""
    if images.resolution == "native":
        raise ConfigError("probe: --data.resolution must be a number of pixels (every latent needs the same shape)")
    generator = torch.Generator(device=device).manual_seed(seed)
    latents, originals = [], []
    for batch in evaluation_samples(images, part="all", max_images=max_images, **loading.of()):
        pixels = pixels_of(batch).to(device)
        if len(pixels):
            latents.append(encode_latents(model, pixels).sample(generator=generator))
            originals.append(pixels.cpu())
    if not latents:
        raise ConfigError(f"probe: no usable images in '{images.source.path}'")
    latents = torch.cat(latents)
    clips = latents.ndim == 5
    latents = as_frames(latents)
    shift, scale = standardisation(latents)
    return (latents - shift) * scale, torch.cat(originals), (shift, scale, clips)


@torch.no_grad()
def sample_fid(
    model, samples: torch.Tensor, originals: torch.Tensor, inception: nn.Module | None, standardised: tuple, pixels: PixelFormat | None = None
) -> tuple[torch.Tensor, float | None]:
    """Decoded samples (in [-1, 1], on CPU; `standardised`: the (shift, scale) `encode` applied) and their
    FID against the real images (None without Inception), on the display channels of `pixels` (Inception
    reads 8-bit RGB)."""
    pixels = pixels or PixelFormat()
    shift, scale, clips = standardised if len(standardised) == 3 else (*standardised, False)
    shift, scale = shift.to(samples.device), scale.to(samples.device)
    latents = [chunk / scale + shift for chunk in samples.split(32)]
    latents = [z.unsqueeze(2) for z in latents] if clips else latents  # a latent frame as a one-frame clip
    decoded = as_frames(torch.cat([decode(model, z).float().clamp(-1, 1).cpu() for z in latents]))
    if inception is None:
        return decoded, None
    fid = fid_metric(inception)
    fid.update(to_uint8(pixels.to_display(as_frames(originals))), real=True)
    fid.update(to_uint8(pixels.to_display(decoded)), real=False)
    return decoded, float(fid.compute())


def run_probe(
    models: list[str],
    images: SampleSet,
    config: ProbeConfig,
    out_dir: str | Path,
    *,
    use_ema: bool = True,
    max_images: int | None = None,
    inception: nn.Module | None = None,
    backbones: str = "pretrained",
    device: str = "auto",
    loading: Loading = Loading(),
    tokens: TokenProbeConfig | None = None,
) -> list[dict]:
    """One row per model (each loaded by `load_autoencoder`; `use_ema`: a vaetrain checkpoint's EMA weights):
    validation flow-matching loss (lower: easier latents), its curve, sample FID; with `tokens`, a discrete
    model's token probe too (`token_probe`: NLL per token, bits per image; None for continuous models)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    target = resolve_device(device)
    rows = []
    for index, reference in enumerate(models):
        model = load_autoencoder(reference, use_ema=use_ema).to(target).eval()
        latents, originals, standardised = encode(model, images, max_images, target, config.seed, loading)
        print(f"vaetrain probe: {reference}: {len(latents)} latents {tuple(latents.shape[1:])}, {config.steps} steps", file=sys.stderr)
        result = train_probe(latents, config, progress=_progress(config.steps))
        row = {
            "model": str(reference),
            "probe_validation_loss": result.validation_loss,
            "probe_curve": result.curve,
            "probe_seconds": round(result.seconds, 1),
            "probe_latent_shape": list(result.latent_shape),
            "probe_images": len(latents),
            "probe_model_size": config.model_size,
            "probe_steps": config.steps,
            "probe_normalisation": "per channel, on the probe's images",
            "probe_fid": None,
            "probe_backbones": backbones,
        }
        if result.samples is not None:
            decoded, row["probe_fid"] = sample_fid(model, result.samples, originals, inception, standardised, images.pixels)
            grid = out_dir / f"probe_samples_{index}.png"
            save_image(make_grid(images.pixels.to_display(decoded[:64]), nrow=8, padding=2, pad_value=1.0), grid)
            row["probe_samples"] = grid.name
        if tokens is not None:
            row |= _token_row(model, images, max_images, target, loading, tokens)
        rows.append(row)
    (out_dir / PROBE_FILE).write_text(json.dumps(rows, indent=2) + "\n")
    _join_metrics(out_dir, rows)
    return rows


def _token_row(model, images: SampleSet, max_images: int | None, device, loading: Loading, config: TokenProbeConfig) -> dict:
    codebook = family_of(model).codebook(model)
    if codebook is None:
        return {"token_nll": None, "token_bits_per_image": None}
    codes = tokens_of(model, images, max_images, device, loading)
    print(f"vaetrain probe: token probe on {tuple(codes.shape)} codes of {len(codebook)}, {config.steps} steps", file=sys.stderr)
    return train_token_probe(codes, len(codebook), config, device).as_row()


def _join_metrics(out_dir: Path, rows: list[dict]) -> None:
    """Adds the probe's figures to the rows of an `eval` run's metrics.json in the same folder."""
    metrics = out_dir / "metrics.json"
    if not metrics.is_file():
        return
    evaluated = json.loads(metrics.read_text())
    by_model = {row["model"]: row for row in rows}
    for row in evaluated:
        row.update({k: v for k, v in by_model.get(row["model"], {}).items() if k != "model"})
    metrics.write_text(json.dumps(evaluated, indent=2) + "\n")


def _progress(total: int):
    from tqdm import tqdm

    bar = tqdm(total=total, desc="probe", unit="step", file=sys.stderr, dynamic_ncols=True, mininterval=2.0)

    def update(step: int, loss: float) -> None:
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.4f}", refresh=False)
        if step == total:
            bar.close()

    return update
