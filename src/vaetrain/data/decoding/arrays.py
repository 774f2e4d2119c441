"""Reading a file's values without loss as a (channels, height, width) array: 16-bit PNG, TIFF and
multi-band GeoTIFF (tifffile; no GDAL), NumPy `.npy`, and any 8-bit image Pillow reads. The kind is found
from the file's first bytes, so folders, Hugging Face datasets and shards read alike.

A file that does not match the `PixelFormat` (another band count, another bit depth) raises `BadImage`
with that reason, and the data module counts it like any other bad file.
"""

from __future__ import annotations

import io
import struct
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from vaetrain.data.decoding.decode import BadImage, decode_image, load_image
from vaetrain.data.decoding.pixels import PixelFormat

NPY_MAGIC = b"\x93NUMPY"
TIFF_MAGIC = (b"II*\x00", b"MM\x00*")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_DTYPES = {8: (np.uint8,), 16: (np.uint16,)}
_MODES_8BIT = {1: "L", 3: "RGB", 4: "RGBA"}


def read_bytes(source: bytes | str | Path) -> bytes:
    data = source if isinstance(source, bytes) else Path(source).read_bytes()
    if not data:
        raise BadImage("empty file")
    return data


def read_pixels(source: bytes | str | Path, pixel_format: PixelFormat, max_pixels: int) -> torch.Tensor:
    """The file's values as a float32 (C, H, W) tensor in raw units (0..255 or 0..65535)."""
    data = read_bytes(source)
    if data.startswith(NPY_MAGIC):
        array = _channels_first(_load_npy(data), pixel_format.channels)
    elif data.startswith(TIFF_MAGIC):
        array = _read_tiff(data)
    elif data.startswith(PNG_MAGIC) and _png_is_16bit_colour(data):
        array = _read_png16(data)
    else:
        array = _read_pillow(data, pixel_format, max_pixels)
    return torch.from_numpy(check_array(array, pixel_format, max_pixels).astype(np.float32))


def read_rgb8(source: bytes | str | Path, max_pixels: int) -> Image.Image:
    """An 8-bit RGB image from a .npy array (H x W x 3 or 3 x H x W uint8), for the plain RGB path."""
    array = check_array(_channels_first(_load_npy(read_bytes(source)), 3), PixelFormat(), max_pixels)
    return Image.fromarray(np.ascontiguousarray(array.transpose(1, 2, 0)))


def check_array(array: np.ndarray, pixel_format: PixelFormat, max_pixels: int) -> np.ndarray:
    """(C, H, W) of the format's dtype and band count, else `BadImage` saying which differs."""
    if array.ndim == 2:
        array = array[None]
    if array.ndim != 3:
        raise BadImage(f"array of shape {list(array.shape)} is not an image (expected H x W, H x W x C or C x H x W)")
    channels, height, width = array.shape
    if height * width > max_pixels:
        raise BadImage(f"decompression bomb: {width}x{height} pixels exceeds the limit of {max_pixels}")
    if channels != pixel_format.channels:
        raise BadImage(f"{channels} channels where data.channels={pixel_format.channels}")
    if array.dtype.type not in _DTYPES[pixel_format.bit_depth]:
        raise BadImage(f"{array.dtype} data where data.bit_depth={pixel_format.bit_depth} expects {_DTYPES[pixel_format.bit_depth][0].__name__}")
    return array


def _channels_first(array: np.ndarray, channels: int) -> np.ndarray:
    """H x W x C or C x H x W -> C x H x W: the axis of length `channels` at either end (the last when both
    match); else the shorter end axis, so a wrong band count is reported as such."""
    if array.ndim != 3:
        return array
    if array.shape[-1] == channels or (array.shape[0] != channels and array.shape[-1] < array.shape[0]):
        return np.moveaxis(array, -1, 0)
    return array


def _load_npy(data: bytes) -> np.ndarray:
    try:
        return np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, OSError, EOFError) as error:
        raise BadImage(f"unreadable .npy array ({error})") from error


def _read_tiff(data: bytes) -> np.ndarray:
    """tifffile's first series; the samples axis (S) or a channel axis moved first."""
    import tifffile

    try:
        with tifffile.TiffFile(io.BytesIO(data)) as tiff:
            series = tiff.series[0]
            array, axes = series.asarray(), series.axes
    except Exception as error:  # noqa: BLE001 - tifffile raises many kinds (and needs imagecodecs for LZW/JPEG)
        raise BadImage(f"unreadable TIFF ({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''})") from error
    if array.ndim == 3 and axes[-1] in "SC":
        array = np.moveaxis(array, -1, 0)
    return array


def _png_is_16bit_colour(data: bytes) -> bool:
    """IHDR's bit depth 16 with colour (RGB, RGBA, gray+alpha): Pillow would read those as 8-bit."""
    if len(data) < 26:
        return False
    depth, colour = struct.unpack(">BB", data[24:26])
    return depth == 16 and colour in (2, 4, 6)


def _read_png16(data: bytes) -> np.ndarray:
    import png  # pypng: reads 16-bit colour PNGs without loss

    try:
        width, height, rows, info = png.Reader(bytes=data).asDirect()
        array = np.vstack([np.asarray(row, dtype=np.uint16) for row in rows])
    except Exception as error:  # noqa: BLE001 - png.FormatError, ChunkError, zlib errors
        raise BadImage(f"truncated or corrupt PNG data ({error})") from error
    return np.moveaxis(array.reshape(height, width, info["planes"]), -1, 0)


def _read_pillow(data: bytes, pixel_format: PixelFormat, max_pixels: int) -> np.ndarray:
    """8-bit images become L, RGB or RGBA for 1, 3 or 4 channels (alpha kept); 16-bit grayscale stays 16-bit."""
    if pixel_format.bit_depth == 8 and pixel_format.channels == 3:
        return np.asarray(decode_image(data, max_pixels=max_pixels)).transpose(2, 0, 1)
    image = load_image(data, max_pixels=max_pixels)
    if image.mode.startswith("I;16") or image.mode == "I":
        array = np.asarray(image)
        if image.mode == "I" and array.size and (array.min() < 0 or array.max() > 65535):
            raise BadImage("32-bit integer data outside 0..65535")
        return array.astype(np.uint16) if pixel_format.bit_depth == 16 else array
    if pixel_format.bit_depth == 16:
        raise BadImage(f"8-bit {image.mode} image where data.bit_depth=16")
    mode = _MODES_8BIT.get(pixel_format.channels)
    if mode is None:
        raise BadImage(f"a {image.mode} image has {len(image.getbands())} channels where data.channels={pixel_format.channels}")
    return np.asarray(image.convert(mode)).reshape(image.height, image.width, -1).transpose(2, 0, 1)
