"""How a file's values become the [-1, 1] tensors an autoencoder sees, and back: channels, bit depth and
normalisation, as one frozen `PixelFormat` that the data module, checkpoints, evaluation and exports share.

The default (3 channels, 8 bits, fixed range) is 8-bit RGB as every other trainer reads it. Otherwise:

- `range`: raw values in [low, high] (default [0, 2^bit_depth - 1]) map linearly to [-1, 1] for every
  channel; a 16-bit image round-trips exactly (float32 holds 24-bit integers).
- `percentile`: each channel's [p_low, p_high] percentiles, measured once on the training images
  (`measure_bounds`), map to [-1, 1]; values beyond them are clipped. The measured bounds are part of the
  format, so a checkpoint, `vaetrain eval` and an exported folder (`pixel_format.json`) normalise alike.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from vaetrain.errors import ConfigError

PIXEL_FORMAT_FILE = "pixel_format.json"  # beside an exported diffusers folder's config.json
Normalization = Literal["range", "percentile"]
_PIXELS_PER_IMAGE = 65_536  # values per image and channel that percentile measurement keeps (strided)


@dataclass(frozen=True)
class PixelFormat:
    """Channels, bit depth and normalisation of the images (see the module docstring)."""

    channels: int = 3
    """Image channels: 1 (grayscale), 3 (RGB), 4 (RGBA: alpha kept) or any N (multi-band TIFF, .npy)."""
    bit_depth: int = 8
    """8 (uint8 files) or 16 (uint16 PNG/TIFF/.npy); a file of another depth is counted as bad."""
    normalization: Normalization = "range"
    """range: [low, high] -> [-1, 1]; percentile: each channel's measured percentiles -> [-1, 1], clipped."""
    value_range: tuple[float, float] | None = None
    """range: the raw [low, high] of every channel (default [0, 2^bit_depth - 1]); values outside are clipped."""
    percentiles: tuple[float, float] = (0.5, 99.5)
    """percentile: the lower and upper percentile of each channel."""
    low: tuple[float, ...] | None = None
    """Measured per-channel lower bounds (percentile normalisation; filled in by `measure_bounds`)."""
    high: tuple[float, ...] | None = None
    """Measured per-channel upper bounds."""
    display: tuple[int, int, int] | None = None
    """Channels shown as R, G, B in grids and reports (false colour); default: 1 channel gray, else 0, 1, 2."""

    def __post_init__(self) -> None:
        if self.channels < 1:
            raise ConfigError(f"data.channels must be >= 1, got {self.channels}")
        if self.bit_depth not in (8, 16):
            raise ConfigError(f"data.bit_depth must be 8 or 16, got {self.bit_depth}")
        if self.normalization not in ("range", "percentile"):
            raise ConfigError(f"data.normalization must be range or percentile, got {self.normalization!r}")
        if self.value_range is not None and not self.value_range[0] < self.value_range[1]:
            raise ConfigError(f"data.value_range must be [low, high] with low < high, got {list(self.value_range)}")
        if not 0 <= self.percentiles[0] < self.percentiles[1] <= 100:
            raise ConfigError(f"data.percentiles must be 0 <= low < high <= 100, got {list(self.percentiles)}")
        for name in ("low", "high"):
            bounds = getattr(self, name)
            if bounds is not None and len(bounds) != self.channels:
                raise ConfigError(f"data pixel format: {len(bounds)} {name} bounds for {self.channels} channels")
        if self.display is not None and (len(self.display) != 3 or not all(0 <= c < self.channels for c in self.display)):
            raise ConfigError(f"data.display_channels must be 3 channel indices below {self.channels}, got {list(self.display)}")

    @property
    def peak(self) -> float:
        """The largest value the bit depth holds: PSNR's peak (255, 65535)."""
        return float(2**self.bit_depth - 1)

    @property
    def is_rgb8(self) -> bool:
        """Plain 8-bit RGB in [0, 255]: read by the fast Pillow path (alpha composited, any mode converted)."""
        return self.channels == 3 and self.bit_depth == 8 and self.normalization == "range" and self.value_range in (None, (0, 255))

    @property
    def measured(self) -> bool:
        return self.normalization == "range" or (self.low is not None and self.high is not None)

    def bounds(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-channel raw (low, high) as (C, 1, 1) float32 tensors."""
        if self.normalization == "percentile":
            if not self.measured:
                raise ConfigError("data.normalization=percentile: bounds not measured yet (measure_bounds on the training images)")
            low, high = self.low, self.high
        else:
            low_value, high_value = self.value_range or (0.0, self.peak)
            low, high = (low_value,) * self.channels, (high_value,) * self.channels
        shape = (self.channels, 1, 1)
        return torch.tensor(low, dtype=torch.float32).view(shape), torch.tensor(high, dtype=torch.float32).view(shape)

    def normalise(self, raw: torch.Tensor) -> torch.Tensor:
        """Raw values (..., C, H, W) -> [-1, 1], clipped to the bounds."""
        low, high = (b.to(raw.device) for b in self.bounds())
        return ((raw.float() - low) / (high - low) * 2 - 1).clamp(-1, 1)

    def denormalise(self, images: torch.Tensor) -> torch.Tensor:
        """[-1, 1] -> raw values (float), clipped to what the bit depth holds."""
        low, high = (b.to(images.device) for b in self.bounds())
        return ((images.float().clamp(-1, 1) + 1) / 2 * (high - low) + low).clamp(0, self.peak)

    def to_unit(self, images: torch.Tensor) -> torch.Tensor:
        """[-1, 1] -> raw / peak in [0, 1]: what metrics compare, so PSNR's peak is the bit depth's."""
        return self.denormalise(images) / self.peak

    def display_channels(self) -> list[int]:
        return display_triplet(self.channels, self.display)

    def to_display(self, images: torch.Tensor) -> torch.Tensor:
        """[-1, 1] images of any channel count -> 3-channel [0, 1] images to look at (the display triplet,
        each stretched by the format's bounds)."""
        return ((images[..., self.display_channels(), :, :].float().clamp(-1, 1) + 1) / 2).clamp(0, 1)

    def as_dict(self) -> dict[str, Any]:
        values = asdict(self)
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in values.items()}

    @classmethod
    def from_dict(cls, values: dict[str, Any] | None) -> PixelFormat:
        values = {k: v for k, v in (values or {}).items() if k in cls.__dataclass_fields__}
        for key in ("value_range", "percentiles", "low", "high", "display"):
            if values.get(key) is not None:
                values[key] = tuple(values[key])
        return cls(**values)


def display_triplet(channels: int, display: tuple[int, int, int] | list[int] | None = None) -> list[int]:
    """The channels shown as R, G, B in grids and reports: `display` when set, else gray (channel 0) for
    fewer than 3 channels, else 0, 1, 2."""
    if display is not None:
        return list(display)
    return [0, 0, 0] if channels < 3 else [0, 1, 2]


def measure_bounds(pixel_format: PixelFormat, raw_images: Iterable[torch.Tensor]) -> PixelFormat:
    """The format with each channel's percentiles measured on `raw_images` ((C, H, W) raw tensors); a range
    format is returned as it is."""
    if pixel_format.normalization != "percentile":
        return pixel_format
    values: list[np.ndarray] = []
    for image in raw_images:
        flat = image.reshape(image.shape[0], -1).numpy()
        step = max(1, flat.shape[1] // _PIXELS_PER_IMAGE)
        values.append(flat[:, ::step].astype(np.float64))
    if not values:
        raise ConfigError("data.normalization=percentile: no usable training image to measure the percentiles on")
    stacked = np.concatenate(values, axis=1)
    low, high = np.percentile(stacked, pixel_format.percentiles, axis=1)
    high = np.maximum(high, low + 1.0)  # a constant channel still maps to a finite range
    return replace(pixel_format, low=tuple(float(v) for v in low), high=tuple(float(v) for v in high))


def read_pixel_format(folder: str | Path) -> PixelFormat | None:
    """An exported folder's format; None for a folder without one (8-bit RGB)."""
    path = Path(folder) / PIXEL_FORMAT_FILE
    if not path.is_file():
        return None
    try:
        return PixelFormat.from_dict(json.loads(path.read_text()))
    except (json.JSONDecodeError, TypeError) as error:
        raise ConfigError(f"'{path}': not a valid pixel format ({error})") from error
