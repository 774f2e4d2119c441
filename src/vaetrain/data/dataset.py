"""Decoded, transformed samples from any record source, with bad files replaced and reported."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from PIL import Image
from torch.utils.data import Dataset

from vaetrain.data.decode import DEFAULT_MAX_PIXELS, BadImage, decode_image
from vaetrain.data.records import RecordSource
from vaetrain.errors import ConfigError


@dataclass
class DecodeOptions:
    """`min_short_side`: draft-decode JPEGs down to this short side. `skip_smaller_than`: images with a
    shorter short side are skipped (counted) instead of upscaled."""

    min_short_side: int | None = None
    skip_smaller_than: int | None = None
    background: tuple[int, int, int] = (255, 255, 255)
    max_pixels: int = DEFAULT_MAX_PIXELS


class DecodedImages(Dataset):
    """`dataset[i]` is {"image": tensor, "bad": [(name, reason)], "small": n}.

    A record that cannot be used is replaced by the next one (i + 1, i + 2, ...): the replacement is
    deterministic, so resumed and multi-worker runs stay exact, and the skipped names travel with the
    sample to the main process, where `BadFileTracker` counts them.
    """

    def __init__(
        self,
        records: RecordSource,
        transform: Callable[[Image.Image], torch.Tensor],
        options: DecodeOptions | None = None,
        max_attempts: int = 64,
    ) -> None:
        self.records = records
        self.transform = transform
        self.options = options or DecodeOptions()
        self.max_attempts = max_attempts

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict:
        bad: list[tuple[str, str]] = []
        small = 0
        for attempt in range(min(self.max_attempts, len(self))):
            current = (index + attempt) % len(self)
            try:
                return {"image": self.transform(self.decode(current)), "bad": bad, "small": small}
            except _TooSmall:
                small += 1
            except BadImage as error:
                bad.append((self.records.name(current), str(error)))
            except (OSError, ValueError, RuntimeError) as error:  # unreadable file, broken transform input
                bad.append((self.records.name(current), f"{type(error).__name__}: {error}"))
        examples = "; ".join(f"{n}: {r}" for n, r in bad[:3]) or f"{small} images smaller than the crop"
        raise ConfigError(f"data: {self.max_attempts} images in a row from {self.records.name(index)} were unusable ({examples})")

    def decode(self, index: int) -> Image.Image:
        options = self.options
        image = decode_image(
            self.records.load(index),
            min_short_side=options.min_short_side,
            background=options.background,
            max_pixels=options.max_pixels,
        )
        if options.skip_smaller_than and min(image.size) < options.skip_smaller_than:
            raise _TooSmall
        return image


class _TooSmall(Exception):
    pass


def collate_samples(samples: list[dict]) -> dict:
    """Stacks images; concatenates the bad-file reports so the main process sees every one."""
    return {
        "image": torch.stack([s["image"] for s in samples]),
        "bad": [item for s in samples for item in s["bad"]],
        "small": sum(s["small"] for s in samples),
    }
