"""Clips in report.html: per sample clip, its frames as a strip (original, each reconstruction, the
amplified difference) and an animated preview of original | reconstruction side by side, so flicker is
seen as well as measured. Images inline (PNG strips, animated GIF previews): the report stays one file."""

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
    return f"<h2>Reconstructions</h2>{note}<table class='samples'>{''.join(rows)}</table>"


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
