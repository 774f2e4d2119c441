"""Clips in report.html: PSNR by latent chunk per model (a line chart, with the temporal drift), and per
sample clip its frames as a strip (original, each reconstruction, the amplified difference) and an animated
preview of original | reconstruction side by side, so flicker is seen as well as measured. Images inline
(PNG strips, animated GIF previews, SVG chart): the report stays one file."""

from __future__ import annotations

import base64
import html
import io

import torch
from PIL import Image

from vaetrain.evaluation.results import ModelResult

PREVIEW_FPS = 8


def clip_samples(results: list[ModelResult], difference_gain: int, png) -> str:
    """`png` renders a uint8 (C, H, W) tensor as an <img> (report.py's own)."""
    count = min(len(result.samples) for result in results)
    rows = []
    for index in range(count):
        original = results[0].samples[index]["original"]  # uint8 (C, T, H, W)
        cells = [("original", png(_strip(original)))]
        previews = []
        for result in results:
            name = html.escape(result.values["model"].rstrip("/").split("/")[-1])
            reconstruction = result.samples[index]["reconstruction"]
            difference = ((original.int() - reconstruction.int()).abs() * difference_gain).clamp(0, 255).to(torch.uint8)
            cells += [(name, png(_strip(reconstruction))), (f"|difference| x{difference_gain}", png(_strip(difference)))]
            previews.append(f"<td>{name}: original | reconstruction<br>{_animation(original, reconstruction)}</td>")
        strips = "".join(f"<tr><td>{label}</td><td>{cell}</td></tr>" for label, cell in cells)
        rows.append(f"<tr><td colspan='2'><b>clip {index + 1}</b></td></tr>{strips}<tr><td></td><td><table><tr>{''.join(previews)}</tr></table></td></tr>")
    note = "<p class='note'>Each clip's frames left to right; the animations play original | reconstruction side by side.</p>"
    return f"{chunk_chart(results)}<h2>Reconstructions</h2>{note}<table class='samples'>{''.join(rows)}</table>"


COLOURS = ("#1f4e79", "#b00020", "#2e7d32", "#ef6c00", "#6a1b9a", "#00838f")


def chunk_chart(results: list[ModelResult], width: int = 420, height: int = 200) -> str:
    """PSNR by latent chunk, one line per model (x: chunk 1 = the first frame, 2 = frames 2-5, ...), with
    each model's temporal drift (`evaluation.temporal`); empty when no model has chunks."""
    series = [(r.values["model"].rstrip("/").split("/")[-1], r.values.get("psnr_chunks") or [], r.values.get("temporal_drift")) for r in results]
    values = [v for _, chunks, _ in series for v in chunks]
    if not values:
        return ""
    low, high, most = min(values), max(values), max(len(chunks) for _, chunks, _ in series)
    span = (high - low) or 1.0

    def point(k: int, v: float) -> str:
        return f"{30 + k / max(most - 1, 1) * (width - 40):.1f},{height - 24 - (v - low) / span * (height - 48):.1f}"

    lines, legend = [], []
    for index, (name, chunks, drift) in enumerate(series):
        colour = COLOURS[index % len(COLOURS)]
        lines.append(f"<polyline points='{' '.join(point(k, v) for k, v in enumerate(chunks))}' fill='none' stroke='{colour}' stroke-width='1.5'/>")
        shown = "—" if drift is None else f"{drift:+.2f} dB"
        legend.append(f"<span style='color:{colour}'>■</span> {html.escape(name)}: drift {shown}")
    axes = (
        f"<text x='2' y='14' font-size='11'>PSNR (dB) by latent chunk [{low:.2f}, {high:.2f}]</text>"
        f"<text x='30' y='{height - 6}' font-size='10'>chunk 1</text>"
        f"<text x='{width - 10}' y='{height - 6}' font-size='10' text-anchor='end'>chunk {most}</text>"
    )
    chart = f"<svg width='{width}' height='{height}' xmlns='http://www.w3.org/2000/svg'>{''.join(lines)}{axes}</svg>"
    note = (
        "<p class='note'>Chunk 1 is the first frame, chunk 2 frames 2-5, chunk 3 frames 6-9, ... (the causal encoder's chunks). "
        "Temporal drift: mean PSNR of chunks 3 to the last minus chunk 2's; negative: later chunks reconstruct worse.</p>"
    )
    return f"<h2>PSNR by latent chunk</h2>{note}<div class='charts'>{chart}</div><p class='note'>{'<br>'.join(legend)}</p>"


def _strip(clip: torch.Tensor) -> torch.Tensor:
    """(C, T, H, W) -> (C, H, T * W): the frames side by side."""
    return clip.permute(0, 2, 1, 3).flatten(2)


def _animation(original: torch.Tensor, reconstruction: torch.Tensor) -> str:
    pairs = torch.cat([original, reconstruction], dim=-1)  # (C, T, H, 2W)
    frames = [Image.fromarray(pairs[:3, t].permute(1, 2, 0).contiguous().numpy()) for t in range(pairs.shape[1])]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:], duration=1000 // PREVIEW_FPS, loop=0)
    height, width = pairs.shape[-2:]
    scale = max(1, 192 // height)
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return f"<img src='data:image/gif;base64,{data}' width='{width * scale}' height='{height * scale}'>"
