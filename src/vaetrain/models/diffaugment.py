"""DiffAugment: differentiable translation, colour and cutout applied to what a discriminator reads, real and
fake alike, so it cannot memorise the training images (Zhao et al. 2020; the RAE discriminator's)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def diff_augment(images: torch.Tensor, prob: float = 1.0, cutout: float = 0.0) -> torch.Tensor:
    """bytetriper/RAE `src/disc/diffaug.py`, `DiffAug.aug` (from StyleGAN-T's `training/diffaug.py`), without
    its warm-up blur (RAE's trainer never asks for it). Images in [-1, 1], (B, C, H, W), in fp32:

    - each of translation, colour and cutout is on with probability `prob` for the whole batch
      (`torch.rand(3) <= prob`), and seven per-sample uniforms r_0..r_6 are drawn (`torch.rand(7, B, 1, 1)`);
    - translation: each image shifted by (floor(r_0 (2 dh + 1)) - dh, floor(r_1 (2 dw + 1)) - dw) pixels,
      dh = round(H / 8), dw = round(W / 8), the uncovered border filled with 0;
    - colour: x + (r_2 - 0.5) (brightness); (x - mean_c) * 2 r_3 + mean_c (saturation, mean over channels);
      (x - mean) * (r_4 + 0.5) + mean (contrast, mean over the image);
    - cutout (only when `cutout` > 0; at the reference's RAE setting 0 its mask is empty): a square of
      round(cutout * side) pixels centred at (floor(r_5 (H + 1 - ch % 2)), floor(r_6 (W + 1 - cw % 2))) set to 0.

    The draws come from the global generator, as the reference's do, so a resumed run (RNG state restored)
    augments as the straight run did."""
    if prob < 1e-6:
        return images
    x = images.float()
    translate, colour, cut = (torch.rand(3) <= prob).tolist()
    batch, _, height, width = x.shape
    if not (translate or colour or cut):
        return x
    r = torch.rand(7, batch, 1, 1, device=x.device)
    if translate:
        dh, dw = round(height * 0.125), round(width * 0.125)
        shift_h = r[0].mul(2 * dh + 1).floor().long() - dh
        shift_w = r[1].mul(2 * dw + 1).floor().long() - dw
        grid_b, grid_h, grid_w = _grid(batch, height, width, x.device)
        grid_h = (grid_h + shift_h + 1).clamp(0, height + 1)
        grid_w = (grid_w + shift_w + 1).clamp(0, width + 1)
        padded = F.pad(x, [1, 1, 1, 1])
        x = padded.permute(0, 2, 3, 1)[grid_b, grid_h, grid_w].permute(0, 3, 1, 2).contiguous()
    if colour:
        x = x + (r[2].unsqueeze(-1) - 0.5)
        mean = x.mean(dim=1, keepdim=True)
        x = (x - mean) * (r[3].unsqueeze(-1) * 2) + mean
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        x = (x - mean) * (r[4].unsqueeze(-1) + 0.5) + mean
    if cut and cutout > 0:
        cut_h, cut_w = round(height * cutout), round(width * cutout)
        offset_h = r[5].mul(height + (1 - cut_h % 2)).floor().long()
        offset_w = r[6].mul(width + (1 - cut_w % 2)).floor().long()
        grid_b, grid_h, grid_w = _grid(batch, cut_h, cut_w, x.device)
        grid_h = (grid_h + offset_h - cut_h // 2).clamp(0, height - 1)
        grid_w = (grid_w + offset_w - cut_w // 2).clamp(0, width - 1)
        mask = torch.ones(batch, height, width, dtype=x.dtype, device=x.device)
        mask[grid_b, grid_h, grid_w] = 0
        x = x * mask.unsqueeze(1)
    return x


def _grid(batch: int, height: int, width: int, device) -> tuple[torch.Tensor, ...]:
    axes = (torch.arange(n, dtype=torch.long, device=device) for n in (batch, height, width))
    return torch.meshgrid(*axes, indexing="ij")
