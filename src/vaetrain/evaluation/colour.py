"""Colour fidelity a person recognises: the mean CIEDE2000 colour difference (Delta E 2000) between an
image and its reconstruction, and each channel's mean bias (reconstruction - original, so a cast has a
sign: a red door come back brown shows as a negative red bias).

The colour science is scikit-image's (`skimage.color.rgb2lab`: sRGB, D65; `deltaE_ciede2000`: Sharma, Wu and
Dalal 2005), not written again here. Delta E 2000 of about 1 is the smallest difference people see side by
side, 2-3 is noticeable at a glance, above 5 (`NOTICEABLE`) the colours read as different."""

from __future__ import annotations

import numpy as np
import torch

NOTICEABLE = 5.0
"""Mean Delta E 2000 above which the report flags an image: its colours read as different."""


def delta_e_2000(target01: torch.Tensor, reconstruction01: torch.Tensor) -> torch.Tensor:
    """Per image (B, 3, H, W sRGB in [0, 1]): the mean over pixels of Delta E 2000, float64 on the input's device."""
    from skimage.color import deltaE_ciede2000, rgb2lab

    originals, reconstructions = (_hwc(images) for images in (target01, reconstruction01))
    values = [deltaE_ciede2000(rgb2lab(a), rgb2lab(b)).mean() for a, b in zip(originals, reconstructions)]
    return torch.tensor(values, dtype=torch.float64, device=target01.device)


def channel_bias(target01: torch.Tensor, reconstruction01: torch.Tensor) -> torch.Tensor:
    """Per image and channel (B, C): mean(reconstruction - original), in 1/255 of the range (8-bit levels)."""
    return (reconstruction01.double() - target01.double()).mean(dim=(2, 3)) * 255


def _hwc(images: torch.Tensor) -> np.ndarray:
    return images.detach().double().clamp(0, 1).permute(0, 2, 3, 1).cpu().numpy()
