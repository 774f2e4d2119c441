"""The autoencoder is diffusers' AutoencoderKL itself, so an export is the trained module, bit for bit."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
from diffusers import AutoencoderKL

from vaetrain.errors import ConfigError

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass(frozen=True)
class AutoencoderConfig:
    """Architecture of a new AutoencoderKL, or where to load a pretrained one from, and its posterior.

    Defaults are Stable Diffusion 1.x's f8c4 autoencoder. When `pretrained` is set (a local diffusers
    folder or a Hugging Face Hub id), the architecture fields are ignored and the stored config is used.
    """

    block_out_channels: list[int] = field(default_factory=lambda: [128, 256, 512, 512])
    """Channels of each resolution level; n levels downsample by 2^(n-1)."""
    layers_per_block: int = 2
    """Residual blocks per level."""
    latent_channels: int = 4
    """Channels of the latent."""
    in_channels: int = 3
    """Image channels in."""
    out_channels: int = 3
    """Image channels out."""
    norm_num_groups: int = 32
    """GroupNorm groups (LDM: 32)."""
    mid_block_add_attention: bool = True
    """Self-attention in the middle blocks."""
    pretrained: str | None = None
    """A diffusers folder or Hub id to start from (the architecture fields are then ignored)."""
    subfolder: str | None = None
    """Subfolder of `pretrained` holding the autoencoder (e.g. vae)."""
    gradient_checkpointing: bool = False
    """Recompute activations in backward (less memory, ~30 % more compute)."""
    train_encoder: bool = True
    """False: decoder-only fine-tune (encoder and quant_conv frozen; the latent space stays as it is)."""
    posterior: Literal["learned", "fixed"] = "learned"
    """learned: diffusers' diagonal Gaussian (mean and log-variance); fixed: the encoder's mean only,
    z = mu * (1 + posterior_std * eps), and the KL term becomes kl_weight * mean(mu^2) (vqgan-training)."""
    posterior_std: float = 0.1
    """The fixed posterior's relative noise (vqgan-training: 0.1 in v0.2, 0 at HEAD)."""
    latent_clamp: float | None = None
    """Clamp the encoder's mean to [-latent_clamp, latent_clamp] in training (vqgan-training --do_clamp: 8)."""

    def __post_init__(self) -> None:
        if self.posterior_std < 0:
            raise ConfigError(f"model.autoencoder.posterior_std must be >= 0, got {self.posterior_std}")
        if self.latent_clamp is not None and self.latent_clamp <= 0:
            raise ConfigError(f"model.autoencoder.latent_clamp must be positive, got {self.latent_clamp}")


def build_autoencoder(config: AutoencoderConfig) -> AutoencoderKL:
    """A new or pretrained AutoencoderKL, with gradient checkpointing and encoder freezing applied."""
    if config.pretrained:
        model = _load_pretrained(config.pretrained, config.subfolder)
    else:
        levels = len(config.block_out_channels)
        if any(c % config.norm_num_groups for c in config.block_out_channels):
            raise ConfigError(
                f"model.autoencoder.block_out_channels {config.block_out_channels} must all be divisible by "
                f"model.autoencoder.norm_num_groups={config.norm_num_groups}"
            )
        model = AutoencoderKL(
            in_channels=config.in_channels,
            out_channels=config.out_channels,
            down_block_types=("DownEncoderBlock2D",) * levels,
            up_block_types=("UpDecoderBlock2D",) * levels,
            block_out_channels=tuple(config.block_out_channels),
            layers_per_block=config.layers_per_block,
            latent_channels=config.latent_channels,
            norm_num_groups=config.norm_num_groups,
            mid_block_add_attention=config.mid_block_add_attention,
        )
    if config.gradient_checkpointing:
        model.enable_gradient_checkpointing()
    if not config.train_encoder:
        freeze_encoder(model)
    return model


def autoencoder_from_state(config: dict, state_dict: dict[str, torch.Tensor]) -> AutoencoderKL:
    """A fresh fp32 AutoencoderKL from diffusers' config holding exactly these weights (contiguous, whatever
    layout, compilation or sharding trained them), in eval mode."""
    model = AutoencoderKL.from_config(config)
    model.load_state_dict(state_dict, strict=True)
    return model.float().eval()


LOGVAR_FLOOR = -30.0  # diffusers' DiagonalGaussianDistribution clamps the log-variance to [-30, 20]


def with_deterministic_posterior(state_dict: dict[str, torch.Tensor], latent_channels: int) -> dict[str, torch.Tensor]:
    """The weights of a fixed-posterior autoencoder as diffusers will read them: the log-variance half of
    the moments (quant_conv, or the encoder's conv_out without one) set to constant LOGVAR_FLOOR, so
    `latent_dist.mean` is the trained mean and `latent_dist.std` is 3e-7 (`sample()` equals the mean to
    float precision). Training never reads that half, so nothing trained is lost."""
    prefix = "quant_conv." if "quant_conv.weight" in state_dict else "encoder.conv_out."
    weights = dict(state_dict)
    weight, bias = weights[prefix + "weight"].clone(), weights[prefix + "bias"].clone()
    weight[latent_channels:] = 0.0
    bias[latent_channels:] = LOGVAR_FLOOR
    weights[prefix + "weight"], weights[prefix + "bias"] = weight, bias
    return weights


def load_pretrained_autoencoder(source: str | Path, subfolder: str | None = None) -> AutoencoderKL:
    """diffusers' `from_pretrained` of a folder or Hub id, in eval mode. `low_cpu_mem_usage=False`: without
    `accelerate` diffusers would otherwise print installation advice on every load."""
    return AutoencoderKL.from_pretrained(source, subfolder=subfolder, low_cpu_mem_usage=False).eval()


def freeze_encoder(model: AutoencoderKL) -> None:
    """Stops gradients into the encoder half, so a decoder fine-tune keeps the latent space unchanged."""
    for module in (model.encoder, model.quant_conv):
        if module is not None:
            module.requires_grad_(False)


class LastLayerInput:
    """Keeps the input of the decoder's last convolution from the latest forward with gradients on, so the
    adaptive GAN weight can compute that layer's weight gradient directly (`torch.nn.grad.conv2d_weight`)
    instead of by autograd through the autoencoder, which DDP, FSDP and compiled graphs do not allow
    mid-step. The reconstruction is that convolution's output."""

    def __init__(self, model: AutoencoderKL) -> None:
        self.conv = model.decoder.conv_out
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

    def __init__(self, model: AutoencoderKL) -> None:
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
        return torch.nn.grad.conv2d_weight(
            self.value.float(), conv.weight.shape, grad_moments, conv.stride, conv.padding, conv.dilation, conv.groups
        )


def downsampling_factor(model: AutoencoderKL) -> int:
    """How many pixels one latent element spans along each side (8 for SD's f8 autoencoders)."""
    return 2 ** (len(model.config.block_out_channels) - 1)


def _load_pretrained(source: str, subfolder: str | None) -> AutoencoderKL:
    path = Path(source).expanduser()
    if path.exists():
        try:
            return load_pretrained_autoencoder(path, subfolder)
        except (OSError, ValueError) as error:
            raise ConfigError(f"model.autoencoder.pretrained: cannot load '{source}': {_first_line(error)}") from error
    if not _HUB_ID.match(source):
        raise ConfigError(f"model.autoencoder.pretrained: path '{source}' does not exist")
    try:
        return load_pretrained_autoencoder(source, subfolder)
    except Exception as error:  # noqa: BLE001 - the Hub raises many kinds; all mean "cannot load"
        raise ConfigError(
            f"model.autoencoder.pretrained: '{source}' is neither a local folder nor loadable from the Hub: "
            f"{_first_line(error)}"
        ) from error


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
