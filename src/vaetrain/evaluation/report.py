"""report.html: one self-contained file (images inline as PNG, charts as SVG) that a person opens to judge VAEs.

Sections: the metrics table across models; for sample images original | each reconstruction | amplified
difference, with a zoomed crop of each; per-channel latent histograms; and, given a run directory, the
training losses and validation metrics over steps (read from its TensorBoard logs).
"""

from __future__ import annotations

import base64
import html
import math
from pathlib import Path

from vaetrain.evaluation.colour import NOTICEABLE
from vaetrain.evaluation.report_samples import name_of, samples_section
from vaetrain.evaluation.results import ModelResult
from vaetrain.models.quantizer import USAGE_COLUMNS

TABLE_COLUMNS = (
    ("psnr", "PSNR (dB) ↑", 2),
    ("ssim", "SSIM ↑", 4),
    ("ms_ssim", "MS-SSIM ↑", 4),
    ("lpips", "LPIPS ↓", 4),
    ("rfid", "rFID ↓", 3),
    ("rfvd", "rFVD ↓", 2),
    ("kl", "KL / element", 4),
    ("scaling_factor", "scaling_factor", 5),
    ("shift_factor", "shift_factor", 5),
    *USAGE_COLUMNS,
    ("encode_img_per_s", "encode img/s", 1),
    ("decode_img_per_s", "decode img/s", 1),
    ("peak_memory_mb", "peak MB", 0),
    ("fp16_max_abs_activation", "fp16 max |act|", 1),
    ("fp16_nonfinite", "fp16 inf/NaN", None),
    ("flicker", "flicker ↓", 2),
    ("temporal_drift", "drift dB ↑", 2),
    ("delta_e", "ΔE00 ↓", 2),
)
STYLE = """
body { font-family: system-ui, sans-serif; margin: 24px; color: #1d1d1f; background: #fff; }
h1 { font-size: 22px; } h2 { font-size: 18px; margin-top: 32px; }
table.metrics { border-collapse: collapse; font-size: 13px; }
table.metrics th { background: #1f4e79; color: #fff; padding: 6px 8px; text-align: right; }
table.metrics th:first-child, table.metrics td:first-child { text-align: left; }
table.metrics td { border-bottom: 1px solid #ddd; padding: 5px 8px; text-align: right; font-variant-numeric: tabular-nums; }
td.bad { color: #b00020; font-weight: bold; }
.samples td { vertical-align: top; padding: 4px; font-size: 12px; text-align: center; }
.samples img { image-rendering: pixelated; display: block; }
.note { color: #555; font-size: 12px; } .error { color: #b00020; font-size: 13px; }
.charts svg { margin: 4px 12px 12px 0; border: 1px solid #ddd; background: #fafafa; }
"""


def write_report(results: list[ModelResult], path: str | Path, *, run_dir: str | Path | None = None, probe_rows: list[dict] | None = None) -> Path:
    path = Path(path)
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>vaetrain evaluation</title>",
        f"<style>{STYLE}</style></head><body>",
        "<h1>vaetrain evaluation</h1>",
        _metrics_table(results),
        samples_section(results),
        _histograms(results),
    ]
    if probe_rows:
        parts.append(_diffusability(probe_rows, path.parent))
    if run_dir is not None:
        parts.append(_training_curves(Path(run_dir)))
    parts.append("</body></html>")
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text("\n".join(parts), encoding="utf-8")
    partial.replace(path)
    return path


def _diffusability(rows: list[dict], folder: Path) -> str:
    """The probe's table and each model's decoded samples (see `evaluation.probe`)."""
    random = any(row.get("probe_backbones") == "random" for row in rows)
    header = "<tr><th>model</th><th>validation flow-matching loss ↓</th><th>sample FID ↓</th><th>latent</th><th>probe seconds</th></tr>"
    cells = "".join(
        f"<tr><td>{html.escape(name_of(r['model']))}</td><td>{_format(r['probe_validation_loss'], 4)}</td><td>{_format(r.get('probe_fid'), 1)}</td>"
        f"<td>{'x'.join(str(d) for d in r['probe_latent_shape'])}</td><td>{_format(r['probe_seconds'], 0)}</td></tr>"
        for r in rows
    )
    grids = "".join(
        f"<h3>{html.escape(name_of(r['model']))}</h3><img src='data:image/png;base64,{base64.b64encode((folder / r['probe_samples']).read_bytes()).decode()}'>"
        for r in rows
        if r.get("probe_samples") and (folder / r["probe_samples"]).is_file()
    )
    note = (
        f"<p class='note'>The same {rows[0]['probe_model_size']} diffusion transformer trained {rows[0]['probe_steps']} steps on each "
        "model's latents (rectified flow); lower loss: latents a diffusion model learns more easily."
        + (" FID on a random Inception: not a quality measure." if random else "")
        + "</p>"
    )
    return f"<h2>Diffusability</h2>{note}<table class='metrics'>{header}{cells}</table>{grids}"


def _format(value, digits: int | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return f"{value:,.{digits}f}" if digits is not None else html.escape(str(value))


def _metrics_table(results: list[ModelResult]) -> str:
    header = "".join(f"<th>{html.escape(title)}</th>" for _, title, _ in TABLE_COLUMNS)
    rows = []
    for result in results:
        values = result.values
        cells = []
        for key, _, digits in TABLE_COLUMNS:
            css = " class='bad'" if key == "fp16_nonfinite" and values.get(key) else ""
            cells.append(f"<td{css}>{_format(values.get(key), digits)}</td>")
        model = values["model"]
        rows.append(f"<tr><td title='{html.escape(model)}'>{html.escape(name_of(model))}</td>{''.join(cells)}</tr>")
    first = results[0].values
    resolution = first["resolution"]
    where = "native size (padded to the downsampling factor)" if resolution == "native" else f"{resolution}x{resolution} (short side resized, center crop)"
    notes = [
        f"{first['images']} images at {where}, on {first['device']}. PSNR and SSIM per image, then averaged; "
        f"LPIPS with {first.get('lpips_network') or '—'}; rFID between originals and reconstructions; KL per latent "
        "element; scaling_factor = 1/std and shift_factor = mean of posterior samples."
    ]
    biases = [(r, r.values.get("bias_channels")) for r in results if r.values.get("bias_channels")]
    if biases:
        names = ("R", "G", "B") if first.get("channels", 3) == 3 else tuple(f"c{c}" for c in range(first.get("channels", 3)))
        shown = "; ".join(f"{name_of(r.values['model'])}: " + ", ".join(f"{n} {v:+.2f}" for n, v in zip(names, b)) for r, b in biases)
        notes.append(
            f"Colour: ΔE00 is the mean CIEDE2000 difference (above {NOTICEABLE:g} colours read as different; such samples are flagged below). "
            f"Mean bias per channel, reconstruction - original in 8-bit levels: {shown}."
        )
    if first.get("channels", 3) != 3 or first.get("bit_depth", 8) != 8:
        per_channel = "; ".join(
            f"{name_of(r.values['model'])}: PSNR "
            + ", ".join(f"c{c} {v:.2f}" for c, v in enumerate(r.values.get("psnr_channels") or []))
            + " / SSIM "
            + ", ".join(f"c{c} {v:.3f}" for c, v in enumerate(r.values.get("ssim_channels") or []))
            for r in results
        )
        notes.append(
            f"{first['channels']} channels, {first['bit_depth']}-bit: PSNR and SSIM in the data's own units (peak {2 ** first['bit_depth'] - 1}); "
            f"LPIPS {first.get('lpips_channels')}. Per channel: {per_channel}."
        )
    if first.get("backbones") == "random":
        notes.append("LPIPS, rFID and rFVD use randomly initialised networks here: not comparable with published numbers.")
    errors = sorted({error for result in results for error in result.errors})
    error_lines = "".join(f"<p class='error'>{html.escape(e)}</p>" for e in errors)
    note_lines = "".join(f"<p class='note'>{html.escape(n)}</p>" for n in notes)
    return f"<h2>Metrics</h2><table class='metrics'><tr><th>model</th>{header}</tr>{''.join(rows)}</table>{note_lines}{error_lines}"


def _bar_chart(edges: list[float], counts: list[int], title: str, width: int = 220, height: int = 110) -> str:
    top = max(counts) or 1
    bar = width / len(counts)
    bars = "".join(
        f"<rect x='{i * bar:.1f}' y='{height - 18 - (c / top) * (height - 34):.1f}' width='{max(bar - 1, 1):.1f}' "
        f"height='{(c / top) * (height - 34):.1f}' fill='#1f4e79'/>"
        for i, c in enumerate(counts)
    )
    labels = (
        f"<text x='2' y='12' font-size='11'>{html.escape(title)}</text>"
        f"<text x='2' y='{height - 4}' font-size='10'>{edges[0]:.2f}</text>"
        f"<text x='{width - 2}' y='{height - 4}' font-size='10' text-anchor='end'>{edges[-1]:.2f}</text>"
    )
    return f"<svg width='{width}' height='{height}' xmlns='http://www.w3.org/2000/svg'>{bars}{labels}</svg>"


def _histograms(results: list[ModelResult]) -> str:
    sections = []
    for result in results:
        charts = "".join(
            _bar_chart(h["edges"], h["counts"], f"channel {c}: mean {m:.3f}, std {s:.3f}")
            for c, (h, m, s) in enumerate(zip(result.histograms, result.values["latent_mean"], result.values["latent_std"]))
        )
        sections.append(f"<h3>{html.escape(name_of(result.values['model']))}</h3><div class='charts'>{charts}</div>")
    return "<h2>Latent distribution per channel</h2>" + "".join(sections)


def _line_chart(points: list[tuple[int, float]], title: str, width: int = 320, height: int = 160) -> str:
    steps = [s for s, _ in points]
    values = [v for _, v in points if math.isfinite(v)]
    if not values:
        return ""
    low, high = min(values), max(values)
    span_v = (high - low) or 1.0
    span_s = (max(steps) - min(steps)) or 1
    coordinates = " ".join(
        f"{8 + (s - min(steps)) / span_s * (width - 16):.1f},{height - 20 - (v - low) / span_v * (height - 44):.1f}" for s, v in points if math.isfinite(v)
    )
    return (
        f"<svg width='{width}' height='{height}' xmlns='http://www.w3.org/2000/svg'>"
        f"<polyline points='{coordinates}' fill='none' stroke='#1f4e79' stroke-width='1.5'/>"
        f"<text x='4' y='13' font-size='11'>{html.escape(title)} [{low:.4g}, {high:.4g}]</text>"
        f"<text x='4' y='{height - 5}' font-size='10'>step {min(steps)}</text>"
        f"<text x='{width - 4}' y='{height - 5}' font-size='10' text-anchor='end'>step {max(steps)}</text></svg>"
    )


def read_scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar in the run's TensorBoard event files, by tag, sorted by step (later runs of a resumed
    training override earlier values at the same step)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    series: dict[str, dict[int, float]] = {}
    for events in sorted(run_dir.rglob("events.out.tfevents.*")):
        accumulator = EventAccumulator(str(events), size_guidance={"scalars": 0})
        accumulator.Reload()
        for tag in accumulator.Tags().get("scalars", []):
            for event in accumulator.Scalars(tag):
                series.setdefault(tag, {})[event.step] = event.value
    return {tag: sorted(points.items()) for tag, points in series.items()}


def _training_curves(run_dir: Path) -> str:
    scalars = read_scalars(run_dir)
    wanted = [t for t in sorted(scalars) if t.startswith(("val/", "train/")) and not t.endswith("_step")]
    if not wanted:
        return f"<h2>Training run</h2><p class='note'>No TensorBoard scalars under {html.escape(str(run_dir))}.</p>"
    charts = "".join(_line_chart(scalars[tag], tag) for tag in wanted)
    return f"<h2>Training run: {html.escape(str(run_dir))}</h2><div class='charts'>{charts}</div>"
