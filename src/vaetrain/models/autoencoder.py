"""The autoencoder is diffusers' AutoencoderKL itself, so an export is the trained module, bit for bit."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from diffusers import AutoencoderKL

from vaetrain.errors import ConfigError

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass(frozen=True)
class AutoencoderConfig:
    """Architecture of a new AutoencoderKL, or where to load a pretrained one from.

    Defaults are Stable Diffusion 1.x's f8c4 autoencoder. When `pretrained` is set (a local diffusers
    folder or a Hugging Face Hub id), the architecture fields are ignored and the stored config is used.
    """

    block_out_channels: list[int] = field(default_factory=lambda: [128, 256, 512, 512])
    layers_per_block: int = 2
    latent_channels: int = 4
    in_channels: int = 3
    out_channels: int = 3
    norm_num_groups: int = 32
    mid_block_add_attention: bool = True
    pretrained: str | None = None
    subfolder: str | None = None
    gradient_checkpointing: bool = False
    train_encoder: bool = True  # False: decoder-only fine-tune (encoder and quant_conv frozen)


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
