"""The layers whose gradients balance the loss terms: the decoder's last convolution (LDM's adaptive GAN
weight) and the encoder's (VA-VAE's adaptive alignment weight), read by direct weight-gradient formulas
instead of autograd through the autoencoder, which DDP, FSDP and compiled graphs do not allow mid-step."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from vaetrain.models.families import family_of


class LastLayerInput:
    """Keeps the input of the decoder's last convolution from the latest forward with gradients on, so the
    adaptive GAN weight can compute that layer's weight gradient directly (`torch.nn.grad.conv2d_weight`)
    instead of by autograd through the autoencoder, which DDP, FSDP and compiled graphs do not allow
    mid-step. The reconstruction is that convolution's output."""

    def __init__(self, model: nn.Module) -> None:
        self.conv = family_of(model).last_conv(model)
        self.value: torch.Tensor | None = None
        self.conv.register_forward_pre_hook(self._keep)

    def _keep(self, module, args) -> None:
        if torch.is_grad_enabled():
            self.value = args[0]

    def take_weight_gradient(self) -> Callable[[torch.Tensor], torch.Tensor]:
        """Maps d loss / d reconstruction to d loss / d weight, for the latest forward (then forgets it)."""
        conv, conv_input, self.value = self.conv, self.value, None
        if conv_input is None:
            raise RuntimeError("LastLayerInput: no forward with gradients since the last call")

        def weight_gradient(grad_output: torch.Tensor) -> torch.Tensor:
            return torch.nn.grad.conv2d_weight(
                conv_input.float(), conv.weight.shape, grad_output.float(), conv.stride, conv.padding, conv.dilation, conv.groups
            )

        return weight_gradient


class EncoderLastLayer:
    """The encoder's twin of `LastLayerInput`: keeps the input of the encoder's last convolution from the
    latest forward with gradients on, and maps a gradient at the posterior mean to that convolution's weight
    gradient (through quant_conv's mean rows; the log-variance path's share is left out: zero for a fixed
    posterior, small when the posterior's std is). VA-VAE weighs its alignment term by gradient norms there."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.value: torch.Tensor | None = None
        model.encoder.conv_out.register_forward_pre_hook(self._keep)

    def _keep(self, module, args) -> None:
        if torch.is_grad_enabled():
            self.value = args[0].detach()

    def weight_gradient(self, grad_mean: torch.Tensor) -> torch.Tensor:
        if self.value is None:
            raise RuntimeError("EncoderLastLayer: no encoder forward with gradients yet")
        conv, quant = self.model.encoder.conv_out, self.model.quant_conv
        channels = grad_mean.shape[1]
        grad_moments = grad_mean.float()
        if quant is not None:
            weight = quant.weight.full_tensor() if hasattr(quant.weight, "full_tensor") else quant.weight
            grad_moments = torch.einsum("oc,bohw->bchw", weight[:channels, :, 0, 0].float(), grad_moments)
        else:
            grad_moments = torch.cat([grad_moments, torch.zeros_like(grad_moments)], dim=1)
        return torch.nn.grad.conv2d_weight(self.value.float(), conv.weight.shape, grad_moments, conv.stride, conv.padding, conv.dilation, conv.groups)
