"""`vaetrain recon`: reconstructions of image files or folders, written as PNG at each image's own size."""

from __future__ import annotations

from pathlib import Path

import torch

from vaetrain.data.decode import BadImage, decode_image
from vaetrain.data.folder import list_images
from vaetrain.data.transforms import native_transform
from vaetrain.errors import ConfigError
from vaetrain.evaluation.evaluate import resolve_device
from vaetrain.evaluation.reconstruct import TilingConfig, reconstruct
from vaetrain.export.formats import load_autoencoder

SEPARATOR_PX = 4


def _inputs(paths: list[str]) -> list[tuple[Path, Path]]:
    """(file, output path relative to OUT): a folder keeps its layout below it; a file keeps its name."""
    pairs = []
    for entry in paths:
        path = Path(entry).expanduser()
        if path.is_dir():
            pairs += [(file, file.relative_to(path).with_suffix(".png")) for file in list_images(path)]
        elif path.is_file():
            pairs.append((path, Path(path.name).with_suffix(".png")))
        else:
            raise ConfigError(f"recon: input '{path}' does not exist")
    return pairs


def reconstruct_files(
    model_reference: str,
    inputs: list[str],
    out_dir: str | Path,
    *,
    side_by_side: bool = False,
    tiling: TilingConfig | None = None,
    device: str = "auto",
) -> tuple[int, list[tuple[str, str]]]:
    """Writes OUT/<name>.png for each image; returns how many were written and the unusable files."""
    from torchvision.utils import save_image

    pairs = _inputs(inputs)
    target = resolve_device(device)
    model = load_autoencoder(model_reference).to(target)
    transform = native_transform()
    out_dir = Path(out_dir)
    written, bad = 0, []
    for file, relative in pairs:
        try:
            image = transform(decode_image(file)).unsqueeze(0).to(target)
        except (BadImage, OSError) as error:
            bad.append((str(file), str(error)))
            continue
        reconstruction = reconstruct(model, image, tiling).float().clamp(-1, 1)
        picture = reconstruction
        if side_by_side:
            gap = torch.ones(1, 3, image.shape[2], SEPARATOR_PX, device=target)
            picture = torch.cat([image, gap, reconstruction], dim=3)
        path = out_dir / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        save_image((picture + 1) / 2, path)
        written += 1
    return written, bad
