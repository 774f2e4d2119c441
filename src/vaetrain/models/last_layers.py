"""The layers whose gradients balance the loss terms: the decoder's last convolution (LDM's adaptive GAN
weight) and the encoder's (VA-VAE's adaptive alignment weight), read by direct weight-gradient formulas
instead of autograd through the autoencoder, which DDP, FSDP and compiled graphs do not allow mid-step."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from vaetrain.models.families import family_of
from vaetrain.models.families.wan_chunks import recomputing


class LastLayerInput:
    """Keeps the input of the decoder's last convolution from the latest forward with gradients on, so the
    adaptive GAN weight can compute that layer's weight gradient directly (`torch.nn.grad.conv2d_weight`)
    instead of by autograd through the autoencoder, which DDP, FSDP and compiled graphs do not allow
    mid-step. The reconstruction is that convolution's output.

    A video family's decoder runs its last (causal 3D) convolution once per latent frame, on the chunk
    padded with the previous chunks' cached frames, and concatenates the outputs in time, then clamps them
    to [-1, 1]: every chunk of the latest decode is kept (`Family.last_conv_chunk`: the padded input, and
    whether it starts a decode), its weight gradient taken against its slice of the gradient, and the
    gradient masked where the clamp cut it off. A chunk recomputed in backward under activation checkpointing
    (`wan_chunks.recomputing()`) is not kept again."""

    def __init__(self, model: nn.Module) -> None:
        self.family = family_of(model)
        self.model = model
        self.conv = self.family.last_conv(model)
        self.chunks: list[tuple[torch.Tensor, torch.Tensor | None]] = []  # (padded input, output inside the clamp)
        self.conv.register_forward_hook(self._keep)

    def _keep(self, module, args, output) -> None:
        if torch.is_grad_enabled() and not recomputing():  # a checkpointed chunk's recomputation in backward: kept once
            padded, first = self.family.last_conv_chunk(module, args)
            if first:
                self.chunks = []
            inside = (output.detach().abs() <= 1) if self.family.decoder_clamps else None
            self.chunks.append((padded.detach(), inside))

    def take_weight_gradient(self) -> Callable[[torch.Tensor], torch.Tensor]:
        """Maps d loss / d reconstruction to d loss / d weight, for the latest forward (then forgets it)."""
        conv, chunks, self.chunks = self.conv, self.chunks, []
        if not chunks:
            raise RuntimeError("LastLayerInput: no forward with gradients since the last call")
        if isinstance(conv, nn.Linear):  # a decoder's patch head on tokens (AutoencoderRAE's decoder_pred)
            tokens = chunks[-1][0]

            def linear_weight_gradient(grad_output: torch.Tensor) -> torch.Tensor:
                grad = self.family.last_layer_output_gradient(self.model, grad_output.float())
                return torch.einsum("bnp,bnd->pd", grad, tokens.float())

            return linear_weight_gradient
        weight_of = torch.nn.grad.conv3d_weight if isinstance(conv, nn.Conv3d) else torch.nn.grad.conv2d_weight

        def weight_gradient(grad_output: torch.Tensor) -> torch.Tensor:
            grad_output = self.family.last_layer_output_gradient(self.model, grad_output)  # LTX: un-patchified
            total, start = None, 0
            for padded, inside in chunks:
                length = (padded.shape[2] - conv.kernel_size[0]) // conv.stride[0] + 1 if len(chunks) > 1 else grad_output.shape[2]
                grad = grad_output[:, :, start : start + length] if len(chunks) > 1 else grad_output
                grad = grad * inside if inside is not None else grad
                part = weight_of(padded.float(), conv.weight.shape, grad.float(), conv.stride, conv.padding, conv.dilation, conv.groups)
                total, start = part if total is None else total + part, start + length
            return total

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
        if torch.is_grad_enabled() and not recomputing():
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
