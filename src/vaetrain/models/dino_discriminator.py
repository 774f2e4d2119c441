"""RAE's discriminator: a frozen DINO ViT (S/8) read at several depths, a small trained head on each."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from vaetrain.errors import PretrainedWeightsUnavailable
from vaetrain.frames import as_frames
from vaetrain.models.diffaugment import diff_augment

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class DinoDiscriminator(nn.Module):
    """bytetriper/RAE `src/disc/dinodisc.py`, `DinoDisc` (recipe `S_8`, `norm_type: bn`, `using_spec_norm`):
    the image (DiffAugment first, `models.diffaugment`, when `config.diffaugment_prob` > 0) resized bilinearly
    to `dino_input_size`, ImageNet-normalised from [-1, 1] (`x * 0.5 / std + (0.5 - mean) / std`), through a
    frozen DINO ViT; the patch tokens of the last block and of each block in `dino_key_depths` each go to a
    trained head: spectral-normed Conv1d k=1 -> per-sample norm over tokens -> LeakyReLU(0.2), then a residual
    block of the same with kernel `dino_kernel` (circular padding) scaled by 1/sqrt(2), then a spectral-normed
    Conv1d to one logit per token. The logits of all heads are concatenated, (batch, tokens x heads).

    Deviations: the backbone is transformers' ViT (`facebook/dino-vits8`: DINO's weights, exact GELU and the
    model's own layer-norm epsilon) where the reference re-implements it with tanh-approximated GELU and
    epsilon 1e-6 and zeroes the key biases (which change no attention weight); its `BatchNormLocal` with a
    virtual batch of 1 is `InstanceNorm1d` (the same per-sample statistics over tokens); spectral norm is
    PyTorch's parametrisation, advanced once per accumulated batch like the PatchGAN's. The backbone is
    frozen and always in eval mode; only the heads train."""

    def __init__(self, config, backbone: nn.Module | None = None) -> None:
        super().__init__()
        self.config = config
        self.backbone = (backbone if backbone is not None else build_backbone(config)).eval().requires_grad_(False)
        width, depth = self.backbone.config.hidden_size, self.backbone.config.num_hidden_layers
        self.key_depths = tuple(d for d in config.dino_key_depths if d < depth)  # the reference's filter
        self.heads = nn.ModuleList(_head(width, config.dino_kernel) for _ in range(len(self.key_depths) + 1))
        mean, std = torch.tensor(IMAGENET_MEAN), torch.tensor(IMAGENET_STD)
        self.register_buffer("x_scale", (0.5 / std).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("x_shift", ((0.5 - mean) / std).view(1, 3, 1, 1), persistent=False)

    def train(self, mode: bool = True) -> DinoDiscriminator:
        super().train(mode)
        self.backbone.eval()
        return self

    def forward(self, images: torch.Tensor, condition: torch.Tensor | None = None) -> torch.Tensor:
        """(batch, logits); clips frame by frame (never conditioned: `condition` is PatchGAN's, refused for this kind)."""
        x = as_frames(images).float()
        if self.config.diffaugment_prob > 0:
            x = diff_augment(x, self.config.diffaugment_prob, self.config.diffaugment_cutout)
        side = self.config.dino_input_size
        x = F.interpolate(x, size=(side, side), mode="bilinear", align_corners=False)
        x = x * self.x_scale + self.x_shift
        hidden = self.backbone(pixel_values=x, output_hidden_states=True, interpolate_pos_encoding=True).hidden_states
        taps = [hidden[-1]] + [hidden[d + 1] for d in self.key_depths]  # hidden[0] is the embedding
        return torch.cat([head(tap[:, 1:].transpose(1, 2)).flatten(1) for head, tap in zip(self.heads, taps)], dim=1)

    def set_power_iteration(self, enabled: bool) -> None:
        """Whether the next forwards advance the heads' spectral-norm power iteration (see the PatchGAN's)."""
        for module in self.heads.modules():
            if type(module).__name__ == "_SpectralNorm":
                module.train(enabled)


class _Residual(nn.Module):
    def __init__(self, block: nn.Module) -> None:
        super().__init__()
        self.block = block

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.block(x) + x) / math.sqrt(2)


def _block(width: int, kernel: int) -> nn.Sequential:
    conv = nn.Conv1d(width, width, kernel_size=kernel, padding=kernel // 2, padding_mode="circular")
    return nn.Sequential(spectral_norm(conv), nn.InstanceNorm1d(width, eps=1e-6, affine=True), nn.LeakyReLU(0.2))


def _head(width: int, kernel: int) -> nn.Sequential:
    return nn.Sequential(_block(width, 1), _Residual(_block(width, kernel)), spectral_norm(nn.Conv1d(width, 1, kernel_size=1)))


def build_backbone(config) -> nn.Module:
    """A transformers ViT: random weights from `dino_architecture` (ViTConfig's fields; tests and plumbing),
    else `dino_backbone` (a Hub id, downloaded once into the Hugging Face cache, or a local folder)."""
    from transformers import ViTConfig, ViTModel

    if config.dino_architecture is not None:
        return ViTModel(ViTConfig(**config.dino_architecture), add_pooling_layer=False)
    try:
        return ViTModel.from_pretrained(config.dino_backbone, add_pooling_layer=False)
    except Exception as error:  # noqa: BLE001 - hub, network and format errors all mean "cannot load"
        raise PretrainedWeightsUnavailable(
            f"model.discriminator.dino_backbone: cannot load '{config.dino_backbone}' ({type(error).__name__}); download it once with "
            "network access (it is cached), give a local folder, or set model.discriminator.dino_architecture for random weights (plumbing only)"
        ) from error
