"""A folder holding one file of every awkward kind named in the data issue."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

BAD = {  # file name -> the start of the reason decode_image gives
    "zero_bytes.jpg": "empty file",
    "truncated.jpg": "truncated or corrupt",
    "corrupt.jpg": "corrupt image header",
    "not_an_image.png": "not an image",
    "bomb.png": "decompression bomb",
}
GOOD_BUT_ODD = ["cmyk.jpg", "gray16.png", "rgba.png", "la.png", "palette.png", "palette_alpha.png", "gray.jpg", "exif_rotated.jpg"]


def _jpeg_bytes(size=(48, 40), seed=0) -> bytes:
    rng = np.random.default_rng(seed)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def _png_claiming(width: int, height: int) -> bytes:
    """A real 1x1 PNG whose header claims width x height: tiny on disk, a bomb if decoded."""
    buffer = io.BytesIO()
    Image.new("RGB", (1, 1)).save(buffer, "PNG")
    data = bytearray(buffer.getvalue())
    ihdr = bytearray(data[12:29])  # 'IHDR' + 13 data bytes
    ihdr[4:12] = struct.pack(">II", width, height)
    data[12:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(ihdr)) & 0xFFFFFFFF)
    return bytes(data)


def write_bad_folder(folder: Path, normal: int = 7) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    for i in range(normal):
        (folder / f"000_normal_{i}.jpg").write_bytes(_jpeg_bytes(seed=i))
    (folder / "zero_bytes.jpg").write_bytes(b"")
    jpeg = _jpeg_bytes(size=(64, 64), seed=99)
    (folder / "truncated.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    (folder / "corrupt.jpg").write_bytes(jpeg[:200] + bytes(rng.integers(0, 256, 3000, dtype=np.uint8)))
    (folder / "not_an_image.png").write_text("this is a text file with an image extension\n")
    (folder / "bomb.png").write_bytes(_png_claiming(40_000, 40_000))

    Image.new("CMYK", (48, 40), (0, 255, 255, 0)).save(folder / "cmyk.jpg")  # pure red
    Image.fromarray(np.full((40, 48), 65535, dtype=np.uint16)).save(folder / "gray16.png")
    rgba = np.zeros((40, 48, 4), dtype=np.uint8)
    rgba[:, :24] = (0, 0, 255, 255)  # left half opaque blue, right half transparent
    Image.fromarray(rgba, "RGBA").save(folder / "rgba.png")
    Image.new("LA", (48, 40), (0, 0)).save(folder / "la.png")  # fully transparent
    Image.new("RGB", (48, 40), (10, 200, 30)).convert("P", palette=Image.Palette.ADAPTIVE).save(folder / "palette.png")
    palette = Image.new("P", (48, 40), 0)
    palette.putpalette([0, 0, 0] * 256)
    palette.save(folder / "palette_alpha.png", transparency=0)
    Image.new("L", (48, 40), 128).save(folder / "gray.jpg")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    Image.new("RGB", (48, 40), (200, 10, 10)).save(folder / "exif_rotated.jpg", exif=exif)
    return folder
