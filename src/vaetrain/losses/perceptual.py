"""LPIPS from the `lpips` package, differentiable and permanently in eval mode; for images that are not
RGB, averaged over channel triplets (`ChannelTriplets`)."""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn
from torch.nn import functional as F

from vaetrain.errors import ConfigError, weights_unavailable

PerceptualNetwork = Literal["vgg", "alex", "squeeze"]
Backbone = Literal["pretrained", "random"]
TripletSetting = list[list[int]] | Literal["each"] | None

MIN_SIDE = 32  # LPIPS on AlexNet needs >= 31 px (its stride-4 stem and three 3x3/2 pools)
# torchvision's file names for the ImageNet backbones that `lpips` loads.
TORCHVISION_WEIGHTS = {"vgg": "vgg16-397923af.pth", "alex": "alexnet-owt-7be5be79.pth", "squeeze": "squeezenet1_1-b8a52dc0.pth"}


class PerceptualLoss(nn.Module):
    """Per-image LPIPS distance between images in [-1, 1].

    Gradients flow into the images (and so into the decoder), never into LPIPS' own weights. `train()`
    is overridden because Lightning calls `model.train()` on the whole module tree, which would switch
    LPIPS' dropout on and make the loss noisy.
    """

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network.eval().requires_grad_(False)

    def train(self, mode: bool = True) -> PerceptualLoss:
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
    network: PerceptualNetwork = "vgg", backbone: Backbone = "pretrained", offline_hint: str = "or set model.loss.perceptual_backbone=random"
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


def channel_triplets(channels: int, setting: TripletSetting, key: str = "model.loss.perceptual_channels") -> list[list[int]] | None:
    """Which channels LPIPS compares as R, G, B. None: RGB images as they are. A 1-channel image is replicated
    to RGB ([[0, 0, 0]]); `each`: every channel replicated ([[0, 0, 0], [1, 1, 1], ...]); a list names the
    triplets (e.g. [[0, 1, 2], [3, 4, 5]] for 6 bands). Other channel counts must say which."""
    if setting is None:
        if channels == 3:
            return None
        if channels == 1:
            return [[0, 0, 0]]
        raise ConfigError(
            f"{key}: LPIPS is defined on RGB and the images have {channels} channels; give channel triplets "
            f"(e.g. [[0, 1, 2], [3, 4, 5]]), 'each' (every channel replicated to RGB), or set model.loss.perceptual_weight to 0"
        )
    if setting == "each":
        return [[channel] * 3 for channel in range(channels)]
    triplets = [list(t) for t in setting]
    if not triplets or any(len(t) != 3 or not all(0 <= c < channels for c in t) for t in triplets):
        raise ConfigError(f"{key}: each entry must be 3 channel indices below {channels}, got {setting}")
    return triplets


class ChannelTriplets(nn.Module):
    """An RGB LPIPS (images, images) -> per-image distance, applied to channel triplets of N-channel images
    and averaged over the triplets: all triplets go through the network as one batch."""

    def __init__(self, network: nn.Module, triplets: list[list[int]]) -> None:
        super().__init__()
        self.network = network
        self.triplets = triplets

    def forward(self, reconstruction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        def views(images: torch.Tensor) -> torch.Tensor:
            return torch.cat([images[:, triplet] for triplet in self.triplets])

        distances = self.network(views(reconstruction), views(target))
        return distances.view(len(self.triplets), len(target)).mean(dim=0)


def for_channels(network: nn.Module | None, channels: int, setting: TripletSetting, key: str = "model.loss.perceptual_channels") -> nn.Module | None:
    """`network` as it is for RGB, else wrapped to compare the configured channel triplets."""
    if network is None:
        return None
    triplets = channel_triplets(channels, setting, key)
    return network if triplets is None else ChannelTriplets(network, triplets)
