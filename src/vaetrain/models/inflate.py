"""Starting an N-channel autoencoder from a pretrained 3-channel one (grayscale, RGBA, multispectral): the
image-side convolutions get N channels, everything else keeps its trained weights.

Rule (documented in the README, "Beyond RGB"):
- input (the encoder's first convolution): N = 1 takes the *sum* of the RGB filters, so a grayscale image
  encodes exactly as the original model encodes it replicated to RGB; N > 3 keeps the RGB filters for
  channels 0-2 and gives every extra channel the mean of the RGB filters, so an input whose extra channels
  are zero encodes exactly as the original encodes its RGB part; N = 2 keeps R and G.
- output (the decoder's last convolution): N = 1 takes the mean of the RGB rows (the gray value of the
  original's output); N > 3 keeps rows 0-2 (the RGB outputs are the original's) and gives every extra
  channel the mean of the RGB rows and biases; N = 2 keeps R and G.
"""

from __future__ import annotations

import torch
from torch import nn

from vaetrain.errors import ConfigError
from vaetrain.models.families import family_of


def inflate_input(conv: nn.Conv2d, channels: int) -> nn.Conv2d:
    _check_conv(conv, "in_channels")
    weight = conv.weight.detach()
    if weight.shape[1] != 3:
        raise ConfigError(f"model.autoencoder.in_channels: inflating needs a 3-channel pretrained model, its input has {weight.shape[1]}")
    if channels == 1:
        new = weight.sum(dim=1, keepdim=True)
    elif channels <= 3:
        new = weight[:, :channels]
    else:
        new = torch.cat([weight, weight.mean(dim=1, keepdim=True).expand(-1, channels - 3, -1, -1)], dim=1)
    return _conv_like(conv, new, conv.bias, in_channels=channels)


def inflate_output(conv: nn.Conv2d, channels: int) -> nn.Conv2d:
    _check_conv(conv, "out_channels")
    weight, bias = conv.weight.detach(), conv.bias.detach() if conv.bias is not None else None
    if weight.shape[0] != 3:
        raise ConfigError(f"model.autoencoder.out_channels: inflating needs a 3-channel pretrained model, its output has {weight.shape[0]}")

    def rows(tensor: torch.Tensor) -> torch.Tensor:
        if channels == 1:
            return tensor.mean(dim=0, keepdim=True)
        if channels <= 3:
            return tensor[:channels]
        return torch.cat([tensor, tensor.mean(dim=0, keepdim=True).expand(channels - 3, *tensor.shape[1:])])

    return _conv_like(conv, rows(weight), rows(bias) if bias is not None else None, out_channels=channels)


def inflate_channels(model: nn.Module, in_channels: int, out_channels: int) -> nn.Module:
    """`model` with its image-side convolutions rebuilt for `in_channels` / `out_channels` (and its diffusers
    config saying so, so the export reloads as it is); unchanged when both are 3."""
    family = family_of(model)
    if in_channels != 3:
        family.set_first_conv(model, inflate_input(family.first_conv(model), in_channels))
        model.register_to_config(in_channels=in_channels)
    if out_channels != 3:
        family.set_last_conv(model, inflate_output(family.last_conv(model), out_channels))
        if "out_channels" in model.config:
            model.register_to_config(out_channels=out_channels)
    return model


def _conv_like(conv: nn.Conv2d, weight: torch.Tensor, bias: torch.Tensor | None, **channels) -> nn.Conv2d:
    new = nn.Conv2d(
        channels.get("in_channels", conv.in_channels),
        channels.get("out_channels", conv.out_channels),
        conv.kernel_size,
        stride=conv.stride,
        padding=conv.padding,
        dilation=conv.dilation,
        groups=conv.groups,
        bias=bias is not None,
        padding_mode=conv.padding_mode,
    ).to(device=conv.weight.device, dtype=conv.weight.dtype)
    with torch.no_grad():
        new.weight.copy_(weight)
        if bias is not None:
            new.bias.copy_(bias)
    return new


def _check_conv(conv: nn.Module, field: str) -> None:
    if type(conv) is not nn.Conv2d:
        raise ConfigError(f"model.autoencoder.{field}: this model's image-side layer is a {type(conv).__name__}, not a convolution vaetrain can inflate")
