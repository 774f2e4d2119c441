"""Run as a script: reconstructs a generated H x W image with tiling and prints peak memory and the
per-line jump profile, so the test can measure memory in a process of its own."""

import json
import resource
import sys

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL

from vaetrain.evaluation.reconstruct import TilingConfig, reconstruct


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(height: int, width: int, overlap: float, tile: int) -> None:
    torch.manual_seed(0)
    torch.set_num_threads(2)
    model = AutoencoderKL(
        block_out_channels=(8, 16, 16),
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=4,
    ).eval()
    generator = torch.Generator().manual_seed(0)
    coarse = torch.rand(1, 3, height // 50, width // 50, generator=generator)
    image = F.interpolate(coarse, size=(height, width), mode="bicubic", align_corners=False).clamp(0, 1) * 2 - 1
    before = peak_rss_mb()
    output = reconstruct(model, image, TilingConfig(tile_size=tile, overlap=overlap))
    after = peak_rss_mb()
    rows = output.diff(dim=2).abs().mean(dim=(0, 1, 3))  # jump between row r and r + 1
    cols = output.diff(dim=3).abs().mean(dim=(0, 1, 2))
    print(json.dumps({"shape": list(output.shape), "rss_before_mb": before, "rss_peak_mb": after, "row_jumps": rows.tolist(), "col_jumps": cols.tolist()}))


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]))
