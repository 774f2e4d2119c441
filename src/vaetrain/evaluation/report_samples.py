"""The report's reconstructions of images: per sample, original | each reconstruction (with its colour
difference, flagged when the colours read as different) | amplified difference, and a zoomed crop of each;
clips go to `report_clips`."""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

import torch
from PIL import Image

from vaetrain.data.decoding.pixels import display_triplet
from vaetrain.evaluation.colour import NOTICEABLE, delta_e_2000
from vaetrain.evaluation.report_clips import clip_samples
from vaetrain.evaluation.results import ModelResult

DIFFERENCE_GAIN = 5  # |original - reconstruction| x 5, so small errors are visible
ZOOM = 4  # the crop is the central 1/ZOOM of each side, shown ZOOM times larger
MAX_DISPLAY_SIDE = 384


def samples_section(results: list[ModelResult]) -> str:
    if results and results[0].samples and results[0].samples[0]["original"].ndim == 4:  # clips (C, T, H, W)
        return clip_samples(results, DIFFERENCE_GAIN, _png)
    count = min(len(result.samples) for result in results)
    header = (
        "<tr><td>original</td>"
        + "".join(f"<td>{html.escape(name_of(r.values['model']))}</td><td>|difference| x{DIFFERENCE_GAIN}</td>" for r in results)
        + "</tr>"
    )
    rows = []
    for index in range(count):
        original = results[0].samples[index]["original"]
        for label, view in _views(results[0].values, original.shape[0]):
            caption = f"<tr><td colspan='{1 + 2 * len(results)}'>{html.escape(label)}</td></tr>" if label else ""
            full = [_png(original[view])]
            zoomed = [_png(_zoom(original[view]))]
            for result in results:
                reconstruction = result.samples[index]["reconstruction"][view]
                difference = _difference(original[view], reconstruction)
                full += [_png(reconstruction) + (_colour_note(original, reconstruction) if not label and len(view) == 3 else ""), _png(difference)]
                zoomed += [_png(_zoom(reconstruction)), _png(_zoom(difference))]
            rows.append(caption + "<tr>" + "".join(f"<td>{cell}</td>" for cell in full) + "</tr>")
            rows.append("<tr>" + "".join(f"<td>{cell}</td>" for cell in zoomed) + "</tr>")
    note = f"<p class='note'>Second row of each sample: the central 1/{ZOOM} of the image, enlarged {ZOOM}x.</p>"
    return f"<h2>Reconstructions</h2>{note}<table class='samples'>{header}{''.join(rows)}</table>"


def _views(values: dict, channels: int) -> list[tuple[str, list[int]]]:
    """What each sample shows: RGB as it is, 1 channel gray; otherwise the display triplet (`data.decoding.
    pixels.display_triplet`, the rule grids use too), then every channel on its own (gray)."""
    triplet = display_triplet(channels, values.get("display_channels"))
    if channels == 1 or (channels == 3 and triplet == [0, 1, 2]):
        return [("", triplet)]
    return [(f"channels {triplet} as RGB", triplet)] + [(f"channel {c}", [c, c, c]) for c in range(channels)]


def _png(image: torch.Tensor) -> str:
    """A uint8 CHW tensor as an inline <img>, shown at its own size up to MAX_DISPLAY_SIDE."""
    buffer = io.BytesIO()
    Image.fromarray(image.permute(1, 2, 0).numpy()).save(buffer, format="PNG")
    height, width = image.shape[-2:]
    scale = min(1.0, MAX_DISPLAY_SIDE / max(height, width))
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return f"<img src='data:image/png;base64,{data}' width='{round(width * scale)}' height='{round(height * scale)}'>"


def _colour_note(original: torch.Tensor, reconstruction: torch.Tensor) -> str:
    """This sample's mean Delta E 2000, flagged when its colours read as different."""
    value = float(delta_e_2000(original[None].double() / 255, reconstruction[None].double() / 255)[0])
    flag = " class='error'" if value > NOTICEABLE else ""
    return f"<div{flag}>ΔE00 {value:.2f}{' — colours differ' if flag else ''}</div>"


def _zoom(image: torch.Tensor) -> torch.Tensor:
    height, width = image.shape[-2:]
    crop_h, crop_w = max(1, height // ZOOM), max(1, width // ZOOM)
    top, left = (height - crop_h) // 2, (width - crop_w) // 2
    crop = image[:, top : top + crop_h, left : left + crop_w]
    return crop.repeat_interleave(ZOOM, dim=1).repeat_interleave(ZOOM, dim=2)


def _difference(original: torch.Tensor, reconstruction: torch.Tensor) -> torch.Tensor:
    diff = (original.int() - reconstruction.int()).abs() * DIFFERENCE_GAIN
    return diff.clamp(0, 255).to(torch.uint8)


def name_of(reference: str) -> str:
    """Short display name: the last path part, with its folder when the part alone says little."""
    path = Path(reference)
    if path.name in ("diffusers", "last.ckpt") or path.suffix == ".ckpt" and path.parent.name == "checkpoints":
        return "/".join(path.parts[-3:] if path.parent.name == "checkpoints" else path.parts[-2:])
    return path.name or reference
