"""A trainable VGG16 discriminator with patch heads on five feature taps (vqgan-training's)."""

from __future__ import annotations

import torch
from torch import nn

from vaetrain.errors import weights_unavailable
from vaetrain.frames import as_frames

VGG16_WEIGHTS_FILE = "vgg16-397923af.pth"  # torchvision's ImageNet VGG16 (the file LPIPS-VGG uses too)
# (feature slice of torchvision's vgg16().features, head) per tap: relu1_2, relu2_2, relu3_3, relu4_3, relu5_3.
# Each head strides its tap down to 1/16 of the image, so the five logit maps add up patch by patch.
_TAPS = ((0, 4), (4, 9), (9, 16), (16, 23), (23, 30))
_HEADS = (((64, 32, 4), (32, 1, 4)), ((128, 64, 4), (64, 1, 2)), ((256, 128, 2), (128, 1, 2)), ((512, 1, 2),), ((512, 1, 1),))
PATCH = 16


class VGGDiscriminator(nn.Module):
    """vqgan-training's `PatchDiscriminator` (utils.py, HEAD 379fe36): LPIPS' input scaling, torchvision's
    VGG16 features (all trained), and on each of relu1_2 ... relu5_3 a small head of stride-k convolutions
    (kernel = stride, ReLU between two) whose last layer's weight starts at zero; the heads' flattened
    16x-downsampled logit maps are summed. Images must have sides divisible by 16."""

    def __init__(self, config, backbone: nn.Module | None = None) -> None:
        """`backbone`: a torchvision VGG16 to use (tests inject one); by default built per `config.vgg_backbone`."""
        super().__init__()
        self.config = config
        features = (backbone if backbone is not None else _vgg16(config.vgg_backbone)).features
        self.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1))
        self.slices = nn.ModuleList(nn.Sequential(*features[start:end]) for start, end in _TAPS)
        self.heads = nn.ModuleList(_head(layers) for layers in _HEADS)

    def forward(self, images: torch.Tensor, condition: torch.Tensor | None = None) -> torch.Tensor:
        """(batch, patches) logits, clips frame by frame (never conditioned: `condition` is PatchGAN's, refused for this kind)."""
        features = (as_frames(images) - self.shift) / self.scale
        logits = 0
        for layers, head in zip(self.slices, self.heads):
            features = layers(features)
            logits = logits + head(features).flatten(1)
        return logits

    def set_power_iteration(self, enabled: bool) -> None:
        """No spectral norm here: nothing to advance."""
        return None


def _head(layers: tuple[tuple[int, int, int], ...]) -> nn.Sequential:
    modules: list[nn.Module] = []
    for index, (in_channels, out_channels, stride) in enumerate(layers):
        if index:
            modules.append(nn.ReLU())
        modules.append(nn.Conv2d(in_channels, out_channels, kernel_size=stride, stride=stride, bias=True))
    nn.init.zeros_(modules[-1].weight)
    return nn.Sequential(*modules)


class _RandomVGG16(nn.Module):
    """torchvision's VGG16 feature layers with its own initialisation (kaiming normal, fan_out, zero bias),
    without the 120 M-parameter classifier the discriminator never uses (building it took ~1.2 s)."""

    def __init__(self) -> None:
        from torchvision.models.vgg import cfgs, make_layers

        super().__init__()
        self.features = make_layers(cfgs["D"], batch_norm=False)
        for module in self.features.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                nn.init.constant_(module.bias, 0)


def _vgg16(backbone: str) -> nn.Module:
    from torchvision.models import VGG16_Weights, vgg16

    if backbone == "random":
        return _RandomVGG16()
    try:
        return vgg16(weights=VGG16_Weights.IMAGENET1K_V1)
    except Exception as error:  # noqa: BLE001 - urllib, ssl, OSError: all mean "no weights"
        raise weights_unavailable("The VGG16 discriminator", VGG16_WEIGHTS_FILE, error, "or set model.discriminator.vgg_backbone=random") from error
