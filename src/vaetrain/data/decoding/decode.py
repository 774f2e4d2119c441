"""Turning whatever a file holds into an 8-bit RGB PIL image, or a one-line reason why not.

Real collections hold empty, truncated and corrupt files, non-images with image extensions, CMYK JPEGs,
16-bit PNGs, transparent images, palettes, grayscale, EXIF-rotated photos and decompression bombs.
Each either becomes a correct RGB image or raises `BadImage` with its reason; nothing is silently mixed in.
"""

from __future__ import annotations

import io
import math
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

DEFAULT_MAX_PIXELS = 178_956_970  # Pillow's own default bomb limit (~13k x 13k)


class BadImage(Exception):
    """A sample that cannot be used; `str()` is the reason."""


def decode_image(
    source: bytes | str | Path, *, min_short_side: int | None = None, background: tuple[int, int, int] = (255, 255, 255), max_pixels: int = DEFAULT_MAX_PIXELS
) -> Image.Image:
    """Decodes to RGB, applying the EXIF orientation and compositing transparency on `background`.

    `min_short_side` lets JPEGs decode at a reduced size (Pillow's draft mode, a power-of-two
    downscale in the decoder) as long as the short side stays at least that long.
    """
    return to_rgb(load_image(source, min_short_side=min_short_side, max_pixels=max_pixels), background)


def load_image(source: bytes | str | Path, *, min_short_side: int | None = None, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """The decoded image in its own mode (EXIF orientation applied), or `BadImage` with the reason."""
    if isinstance(source, bytes):
        if not source:
            raise BadImage("empty file")
        stream = io.BytesIO(source)
    else:
        path = Path(source)
        if path.stat().st_size == 0:
            raise BadImage("empty file")
        stream = path.open("rb")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = _open(stream, max_pixels)
            if min_short_side and image.format == "JPEG":
                _draft(image, min_short_side)
            try:
                image.load()
            except (OSError, SyntaxError, ValueError) as error:
                raise BadImage(f"truncated or corrupt image data ({error})") from error
            return ImageOps.exif_transpose(image)
    finally:
        stream.close()


def _open(stream, max_pixels: int) -> Image.Image:
    try:
        image = Image.open(stream)
    except UnidentifiedImageError as error:
        stream.seek(0)
        if _has_image_signature(stream.read(16)):
            raise BadImage("corrupt image header (an image signature, but unparseable)") from error
        raise BadImage("not an image (unidentified format)") from error
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise BadImage(f"decompression bomb ({error})") from error
    except (OSError, SyntaxError, ValueError) as error:
        raise BadImage(f"unreadable image header ({error})") from error
    width, height = image.size
    if width <= 0 or height <= 0:
        raise BadImage(f"invalid size {width}x{height}")
    if width * height > max_pixels:
        raise BadImage(f"decompression bomb: {width}x{height} pixels exceeds the limit of {max_pixels}")
    return image


_SIGNATURES = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF8", b"BM", b"II*\x00", b"MM\x00*")


def _has_image_signature(head: bytes) -> bool:
    return head.startswith(_SIGNATURES) or (head[:4] == b"RIFF" and head[8:12] == b"WEBP")


def _draft(image: Image.Image, min_short_side: int) -> None:
    width, height = image.size
    scale = min_short_side / min(width, height)
    if scale < 1:
        image.draft("RGB", (math.ceil(width * scale), math.ceil(height * scale)))


def to_rgb(image: Image.Image, background: tuple[int, int, int]) -> Image.Image:
    """8-bit RGB from any Pillow mode; alpha is composited, 16-bit and float data rescaled."""
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        data = np.asarray(image, dtype=np.float64)
        peak = 65535.0 if mode.startswith("I;16") or data.max() > 255 else 255.0
        return Image.fromarray(np.clip(data / peak * 255.0 + 0.5, 0, 255).astype(np.uint8)).convert("RGB")
    if mode == "F":
        data = np.asarray(image, dtype=np.float64)
        peak = 1.0 if data.max() <= 1.0 else 255.0
        return Image.fromarray(np.clip(data / peak * 255.0 + 0.5, 0, 255).astype(np.uint8)).convert("RGB")
    if mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    elif mode in ("LA", "PA", "La", "RGBa"):
        image = image.convert("RGBA")
    if image.mode == "RGBA":
        canvas = Image.new("RGB", image.size, background)
        canvas.paste(image, mask=image.getchannel("A"))
        return canvas
    return image.convert("RGB")  # L, 1, CMYK, YCbCr, LAB, HSV
