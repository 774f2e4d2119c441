"""LPIPS from the `lpips` package, differentiable and permanently in eval mode."""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn
from torch.nn import functional as F

from vaetrain.errors import weights_unavailable

PerceptualNetwork = Literal["vgg", "alex", "squeeze"]
Backbone = Literal["pretrained", "random"]

MIN_SIDE = 32  # LPIPS on AlexNet needs >= 31 px (its stride-4 stem and three 3x3/2 pools)
# torchvision's file names for the ImageNet backbones that `lpips` loads.
TORCHVISION_WEIGHTS = {
    "vgg": "vgg16-397923af.pth",
    "alex": "alexnet-owt-7be5be79.pth",
    "squeeze": "squeezenet1_1-b8a52dc0.pth",
}


class PerceptualLoss(nn.Module):
    """Per-image LPIPS distance between images in [-1, 1].

    Gradients flow into the images (and so into the decoder), never into LPIPS' own weights. `train()`
    is overridden because Lightning calls `model.train()` on the whole module tree, which would switch
    LPIPS' dropout on and make the loss noisy.
    """

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network.eval().requires_grad_(False)

    def train(self, mode: bool = True) -> "PerceptualLoss":
        super().train(mode)
        self.network.eval()
        return self

    def forward(self, reconstruction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Shape (batch,): one distance per image. Images with a side under MIN_SIDE (EQ-VAE's downscaled
        targets of a small model) are first upsampled (bilinear) to it: AlexNet's pools need 31 px."""
        if min(target.shape[-2:]) < MIN_SIDE:
            scale = MIN_SIDE / min(target.shape[-2:])
            size = [max(MIN_SIDE, round(side * scale)) for side in target.shape[-2:]]
            reconstruction, target = (F.interpolate(x, size=size, mode="bilinear", align_corners=False) for x in (reconstruction, target))
        return self.network(reconstruction, target).flatten(1).sum(dim=1)


def build_perceptual_loss(
    network: PerceptualNetwork = "vgg",
    backbone: Backbone = "pretrained",
    offline_hint: str = "or set model.loss.perceptual_backbone=random",
) -> PerceptualLoss:
    """LPIPS with its calibrated linear heads (bundled with `lpips`) on an ImageNet or random backbone.

    `random` needs no download: for tests and offline demos. `pretrained` uses torchvision's cached
    weights, downloading them if allowed; if neither works it fails with one line naming the file.
    """
    import lpips

    if backbone == "random":
        return PerceptualLoss(lpips.LPIPS(net=network, pretrained=True, pnet_rand=True, verbose=False))
    try:
        return PerceptualLoss(lpips.LPIPS(net=network, pretrained=True, pnet_rand=False, verbose=False))
    except Exception as error:  # noqa: BLE001 - urllib, ssl, OSError, RuntimeError: all mean "no weights"
        raise weights_unavailable(f"LPIPS ({network})", TORCHVISION_WEIGHTS[network], error, offline_hint) from error

