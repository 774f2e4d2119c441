"""Frozen vision encoders: images -> patch features on a grid, the representation a training term reads
(built by name: a transformers DINOv2 id or folder, or `random-small` for tests and offline runs)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vaetrain.errors import ConfigError, PretrainedWeightsUnavailable

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class FrozenFeatures(nn.Module):
    """Images in [-1, 1] -> (batch, feature_dim, h, w) patch features, without gradients, in eval mode even
    when the training module calls `train()`."""

    feature_dim: int

    def train(self, mode: bool = True) -> FrozenFeatures:
        return super().train(False)


class DinoV2Features(FrozenFeatures):
    """A transformers DINOv2: the image resized to 224 px, ImageNet-normalised, the patch tokens (the class
    token dropped) as a 16x16 grid. VA-VAE's `aux_foundation_model.forward_dinov2` feeds timm's DINOv2 the
    [-1, 1] image unnormalised; normalising as DINOv2 was trained is the deviation."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model.eval().requires_grad_(False)
        self.feature_dim = model.config.hidden_size
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        pixels = F.interpolate((images.float() + 1) / 2, size=(224, 224), mode="bilinear", align_corners=False)
        tokens = self.model(pixel_values=(pixels - self.mean) / self.std).last_hidden_state[:, 1:]
        side = int(tokens.shape[1] ** 0.5)
        return tokens.transpose(1, 2).reshape(len(images), self.feature_dim, side, side)


class RandomFeatures(FrozenFeatures):
    """An untrained convolutional encoder with a 16-pixel patch grid: for tests and offline plumbing only
    (its features mean nothing, so no term computed against them measures anything)."""

    def __init__(self, feature_dim: int = 64, seed: int = 0) -> None:
        super().__init__()
        self.feature_dim = feature_dim
        generator = torch.Generator().manual_seed(seed)
        self.net = nn.Sequential(nn.Conv2d(3, 32, 4, 4), nn.GELU(), nn.Conv2d(32, feature_dim, 4, 4))
        for parameter in self.net.parameters():
            parameter.data = torch.randn(parameter.shape, generator=generator) * 0.1
        self.requires_grad_(False)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images.float())


def build_feature_encoder(name: str, setting: str = "the vision encoder") -> FrozenFeatures:
    """The encoder `name` names; `setting`, the config key that gave it, names it in the one-line errors."""
    if name == "random-small":
        return RandomFeatures()
    try:
        from transformers import AutoModel
    except ImportError as error:
        raise ConfigError(
            f"{setting} '{name}' needs the transformers package (pip install transformers); or set it to random-small for an offline run"
        ) from error
    try:
        return DinoV2Features(AutoModel.from_pretrained(name))
    except Exception as error:  # noqa: BLE001 - hub, network and format errors
        raise PretrainedWeightsUnavailable(
            f"{setting}: cannot load '{name}' ({type(error).__name__}); download it once with network "
            "access (it is cached), give a local folder, or set it to random-small for an offline run"
        ) from error
