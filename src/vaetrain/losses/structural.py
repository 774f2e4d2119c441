"""Weight-free reconstruction terms, any channel count, no pretrained network:

- `ms_ssim_l1_map`: Zhao, Gallo, Frosio and Kautz 2017, "Loss Functions for Image Restoration with Neural
  Networks": alpha (1 - MS-SSIM) + (1 - alpha) G * |x - y|, alpha = 0.84. Reference: NVlabs/PL4NN,
  src/loss.py, `MSSSIML1.forward`: the "scales" are five Gaussian windows (sigma 0.5, 1, 2, 4, 8) on the
  same pixels, not a pyramid; luminance from the widest window, the product of the five contrast-structure
  terms, C1 = 0.01^2, C2 = 0.03^2 on [0, 1] values, the L1 weighted by the widest Gaussian; each channel on
  its own. The reference evaluates one odd patch at its centre; here every pixel is a patch centre
  (Gaussian convolutions, window 33 = 2 x 2 sigma_max + 1, reflect padding so borders train too) and the
  map is averaged. Deviation: windows truncated at 2 sigma (the reference's window is the whole patch).
- `focal_frequency_loss`: Jiang, Dai, Wu and Loy 2021 (EndlessSora/focal-frequency-loss,
  focal_frequency_loss.py, `FocalFrequencyLoss` with its defaults: patch_factor 1, no average spectrum,
  per-image weight matrix): the squared distance of the orthonormal 2-D DFTs, weighted by the detached
  |difference|^alpha normalised by its per-image, per-channel maximum. The batch-statistics options
  (`ave_spectrum`, `batch_matrix`) are not offered: they make the loss depend on how a batch is split.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

SIGMAS = (0.5, 1.0, 2.0, 4.0, 8.0)
ZHAO_ALPHA = 0.84
WINDOW = 33
C1, C2 = 0.01**2, 0.03**2


def gaussian(sigma: float, width: int = WINDOW) -> torch.Tensor:
    """The normalised 1-D Gaussian whose outer product with itself is PL4NN's 2-D window (`np.outer`)."""
    axis = torch.arange(width, dtype=torch.float64) - width // 2
    one = torch.exp(-(axis**2) / (2 * sigma**2))
    return one / one.sum()


def _filter(images: torch.Tensor, line: torch.Tensor) -> torch.Tensor:
    """The 2-D Gaussian filter as two 1-D passes (the window is separable: 2 x 33 taps instead of 33^2)."""
    channels, reach = images.shape[1], line.shape[0] // 2
    kernel = line.to(images).expand(channels, 1, 1, line.shape[0])
    rows = F.conv2d(F.pad(images, [reach, reach, reach, reach], mode="reflect"), kernel, groups=channels)
    return F.conv2d(rows, kernel.transpose(-1, -2), groups=channels)


def ms_ssim_l1_map(target01: torch.Tensor, reconstruction01: torch.Tensor, alpha: float = ZHAO_ALPHA) -> torch.Tensor:
    """Per pixel and channel (B, C, H, W): alpha (1 - MS-SSIM) + (1 - alpha) Gaussian-weighted L1, on [0, 1]
    images larger than 16 px (the reflect padding's reach)."""
    x, y = reconstruction01.float(), target01.float()
    with torch.autocast(x.device.type, enabled=False):  # in 16 bits, E[x^2] - E[x]^2 goes negative: 1/(var + C2) explodes
        contrast_structure = torch.ones_like(x)
        for sigma in SIGMAS:
            window = gaussian(sigma)
            mu_x, mu_y = _filter(x, window), _filter(y, window)
            var_x = _filter(x * x, window) - mu_x**2
            var_y = _filter(y * y, window) - mu_y**2
            covariance = _filter(x * y, window) - mu_x * mu_y
            contrast_structure = contrast_structure * (2 * covariance + C2) / (var_x + var_y + C2)
        luminance = (2 * mu_x * mu_y + C1) / (mu_x**2 + mu_y**2 + C1)  # the widest window's (the loop's last)
        weighted_l1 = _filter((x - y).abs(), window)
    return alpha * (1 - luminance * contrast_structure) + (1 - alpha) * weighted_l1


def focal_frequency_loss(target: torch.Tensor, reconstruction: torch.Tensor, alpha: float = 1.0) -> torch.Tensor:
    """FFL of (B, C, H, W) images (any range; vaetrain's [-1, 1]): the reference's mean of the map."""
    return focal_frequency_map(target, reconstruction, alpha).mean()


def focal_frequency_map(target: torch.Tensor, reconstruction: torch.Tensor, alpha: float = 1.0) -> torch.Tensor:
    """FFL per image, channel and frequency (B, C, H, W): the weighted squared spectrum distance, before the
    reference's mean (the orthonormal DFT has one frequency per pixel, so `reduction: sum` sums it as pixels)."""
    prediction = torch.fft.fft2(reconstruction.float(), norm="ortho")
    truth = torch.fft.fft2(target.float(), norm="ortho")
    distance = (prediction - truth).abs() ** 2
    with torch.no_grad():
        weight = distance.sqrt() ** alpha
        weight = weight / weight.amax(dim=(-2, -1), keepdim=True)
        weight = torch.nan_to_num(weight, nan=0.0).clamp(0.0, 1.0)
    return weight * distance
