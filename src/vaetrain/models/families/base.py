"""What every autoencoder family provides (see the package docstring)."""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from vaetrain.errors import ConfigError


@dataclass
class Posterior:
    """The encoder's output: a diagonal Gaussian (`logvar` set, AutoencoderKL) or a point (`logvar` None,
    the deterministic families). Same reading interface as diffusers' DiagonalGaussianDistribution."""

    mean: torch.Tensor
    logvar: torch.Tensor | None = None

    @property
    def std(self) -> torch.Tensor:
        return torch.zeros_like(self.mean) if self.logvar is None else torch.exp(0.5 * self.logvar)

    def mode(self) -> torch.Tensor:
        return self.mean

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        if self.logvar is None:
            return self.mean
        noise = torch.randn(self.mean.shape, generator=generator, device=self.mean.device, dtype=self.mean.dtype)
        return self.mean + self.std * noise


class Family:
    """One diffusers autoencoder class. Subclasses set `name`, `class_name` and override what differs."""

    name: ClassVar[str]
    class_name: ClassVar[str]
    deterministic: ClassVar[bool] = True
    """No posterior variance: `posterior`, `posterior_std` and the KL term do not apply."""
    latent_conventions: ClassVar[tuple[str, ...]] = ("scale_shift",)
    """The latent normalisations (`models.latent_space`) its config can hold, the architecture's default first."""
    conv_in_prefixes: ClassVar[tuple[str, ...]] = ("encoder.conv_in.", "decoder.conv_in.")
    """The input convolutions of encoder and decoder (vqgan-training's `"conv_in" in n`, `conv_in_lr`)."""
    gradient_checkpointing: ClassVar[bool] = True
    """Activation checkpointing computes the same function (the memory budget may switch it on)."""
    video: ClassVar[bool] = False
    """Reads and writes clips (B, C, T, H, W) instead of images (B, C, H, W)."""

    def model_class(self) -> type:
        import diffusers

        return getattr(diffusers, self.class_name)

    def build(self, config) -> nn.Module:
        """A new model from an `AutoencoderConfig` (its `architecture` dict passes diffusers' own fields)."""
        raise NotImplementedError

    def configure(self, model: nn.Module, config) -> None:
        """Training-time settings of a new or pretrained model from its `AutoencoderConfig` (nothing by default)."""

    def set_gradient_checkpointing(self, model: nn.Module, enabled: bool) -> None:
        """Recompute activations in backward (diffusers' own gradient checkpointing by default)."""
        model.enable_gradient_checkpointing() if enabled else model.disable_gradient_checkpointing()

    def is_gradient_checkpointing(self, model: nn.Module) -> bool:
        return model.is_gradient_checkpointing

    def encode(self, model: nn.Module, images: torch.Tensor) -> Posterior:
        raise NotImplementedError

    def decode(self, model: nn.Module, latents: torch.Tensor) -> torch.Tensor:
        return model.decode(latents).sample

    def image_channels(self, model: nn.Module) -> tuple[int, int]:
        """(channels the encoder reads, channels the decoder writes)."""
        config = model.config
        return config.in_channels, config.get("out_channels") or config.in_channels

    def normalisation(self, model: nn.Module) -> dict[str, Any]:
        """The latent normalisation fields (`models.latent_space`) as its pipelines read them: its config's
        (`encoder_type` too, which marks AutoencoderRAE's `in_model` convention). `set_latent_fields` writes them."""
        keys = ("scaling_factor", "shift_factor", "latents_mean", "latents_std", "encoder_type")
        return {k: model.config[k] for k in keys if k in model.config}

    def normalise_code(self, model: nn.Module) -> str | None:
        """The model card's lines computing what its pipelines feed their diffusion model (None: the convention's)."""
        return None

    def latent_channels(self, model: nn.Module) -> int:
        """Channels of the latent `encode` gives (what a diffusion model sees)."""
        return model.config.latent_channels

    def vocabulary(self, model: nn.Module) -> int | None:
        """How many discrete tokens a discrete family's latents quantise to; None for continuous families."""
        return None

    def tokens(self, model: nn.Module, latents: torch.Tensor) -> torch.Tensor:
        """(B, tokens) the discrete tokens of `latents` in raster order, without a graph (discrete families only)."""
        raise NotImplementedError(f"{self.class_name} has no discrete tokens")

    def token_usage(self, model: nn.Module):
        """A torchmetrics Metric of how a set of images uses the tokens (`update(tokens)`, `compute()` -> a dict),
        or None for continuous families."""
        return None

    def pretrained_differences(self, model: nn.Module, config) -> list[str]:
        """What an `AutoencoderConfig` sets beyond the architecture fields that a pretrained model contradicts."""
        return []

    def last_conv(self, model: nn.Module) -> nn.Conv2d:
        """The decoder's last convolution: the reconstruction is an affine function of its output."""
        return model.decoder.conv_out

    decoder_clamps: ClassVar[bool] = False
    """The decoder clamps its last convolution's output to [-1, 1] (no gradient outside)."""

    def last_conv_chunk(self, conv: nn.Module, args: tuple) -> tuple[torch.Tensor, bool]:
        """(the tensor the last convolution convolves in this call, whether the call starts a decode)."""
        return args[0], True

    def last_layer_output_gradient(self, model: nn.Module, grad_reconstruction: torch.Tensor) -> torch.Tensor:
        """d loss / d the last layer's output, from d loss / d reconstruction: the same tensor when the
        reconstruction is the last convolution's output (a family whose last layer is a Linear on tokens maps it)."""
        return grad_reconstruction

    def set_last_conv(self, model: nn.Module, conv: nn.Conv2d) -> None:
        model.decoder.conv_out = conv

    def first_conv(self, model: nn.Module) -> nn.Conv2d:
        """The encoder's first convolution: the only layer that reads image channels."""
        return model.encoder.conv_in

    def set_first_conv(self, model: nn.Module, conv: nn.Conv2d) -> None:
        model.encoder.conv_in = conv

    def check_sides(self, model: nn.Module, sides: list[int]) -> str | None:
        """A one-line reason why the model cannot train on images of these sides (beyond the factor), else None."""
        return None

    def downsampling_factor(self, model: nn.Module) -> int:
        raise NotImplementedError

    def temporal_factor(self, model: nn.Module) -> int:
        """How many frames one latent frame spans (1: an image family)."""
        return 1

    def frame_chunk(self, model: nn.Module) -> int:
        """A causal video encoder reads the first frame alone, then chunks of this many frames."""
        return self.temporal_factor(model)

    def chunks(self, model: nn.Module):
        """A stream through the model's causal chunks (`encode(chunk)` -> moments, `decode(latents)` -> frames,
        caches kept between calls; see `wan_chunks.WanChunks`), or None where the family is not streamed."""
        return None

    def check_frames(self, model: nn.Module, frames: int) -> None:
        """A one-line ConfigError when clips of `frames` frames do not fit (images: only when clips are asked for)."""
        if not self.video:
            if frames:
                raise ConfigError(f"data.frames={frames}: {self.class_name} reads images; a video family (wan, hunyuan, ltx) reads clips")
            return
        chunk = self.frame_chunk(model)
        if frames < 1 or (frames - 1) % chunk:
            raise ConfigError(
                f"data.frames={frames}: {self.class_name} reads clips of 1 + {chunk}k frames (e.g. {1 + chunk}, {1 + 2 * chunk}, {1 + 4 * chunk})"
            )

    def coder_calls(self, model: nn.Module, shape: tuple[int, ...]) -> int | None:
        """How many times diffusers' class calls `model.encoder` and `model.decoder` (together) to reconstruct one
        clip of `shape` (B=1, C, T, H, W; sides divisible by the downsampling factor) with the model's tiling
        settings as they stand: a video's progress in chunks. None: not counted for this family."""
        return None

    def width(self, model: nn.Module) -> int:
        """The base channel width (`lr_scale: width` divides by it)."""
        raise NotImplementedError

    def encoder_modules(self, model: nn.Module) -> list[nn.Module]:
        """What a decoder-only fine-tune freezes."""
        return [model.encoder]

    def shard_units(self, model: nn.Module) -> list[nn.Module]:
        """FSDP units, innermost first; their union must hold every parameter."""
        units = []
        for half in (model.encoder, model.decoder):
            units += [*getattr(half, "down_blocks", []), *getattr(half, "up_blocks", [])]
            units += [half.mid_block] if getattr(half, "mid_block", None) is not None else []
            units.append(half)
        return units

    def set_latent_fields(self, model: nn.Module, fields: dict[str, Any]) -> None:
        """Writes measured latent-normalisation fields (`models.latent_space.convention_fields`) into the model."""
        model.register_to_config(**fields)

    def describe(self, model: nn.Module) -> str:
        """One line for the model card."""
        return self.class_name

    def class_fields(self, config: dict[str, Any]) -> dict[str, Any]:
        """The entries of a diffusers config that the class's constructor takes (and diffusers' own `_` keys):
        diffusers registers some others (AutoencoderTiny's `block_out_channels`) and warns about them at every load."""
        accepted = set(inspect.signature(self.model_class().__init__).parameters)
        return {k: v for k, v in config.items() if k.startswith("_") or k in accepted}

    def from_state(self, config: dict[str, Any], state_dict: dict[str, torch.Tensor]) -> nn.Module:
        """A fresh fp32 model from diffusers' config holding exactly these weights, in eval mode."""
        model = self.model_class().from_config({k: v for k, v in self.class_fields(dict(config)).items() if k != "_class_name"})
        model.load_state_dict(state_dict, strict=True)
        return model.float().eval()

    def load(self, source: str | Path, subfolder: str | None = None) -> nn.Module:
        """diffusers' `from_pretrained`, in eval mode (`low_cpu_mem_usage=False`: no `accelerate` advice)."""
        return self.model_class().from_pretrained(source, subfolder=subfolder, low_cpu_mem_usage=False).eval()


def tile_grid(model: nn.Module, height: int, width: int, divisor: int = 1) -> int:
    """Tiles diffusers' tiled encode (`divisor` 1, sample sides) or decode (`divisor` the spatial compression,
    latent sides) cuts a `height` x `width` frame into: 1 unless tiling is on and a side exceeds the tile."""
    low_h, low_w = model.tile_sample_min_height // divisor, model.tile_sample_min_width // divisor
    if not (model.use_tiling and (height > low_h or width > low_w)):
        return 1
    rows = len(range(0, height, model.tile_sample_stride_height // divisor))
    return rows * len(range(0, width, model.tile_sample_stride_width // divisor))


def windowed_coder_calls(model: nn.Module, shape, encodes_in_windows: bool) -> int:
    """Encoder and decoder calls of diffusers' HunyuanVideo / LTX-Video: once per spatial tile (`tile_grid`), and
    per temporal window (`tile_sample_stride_num_frames`) when `use_framewise_decoding` is on and the clip (its
    latent frames, for the decoder) is longer than `tile_sample_min_num_frames`; the encoder's windows likewise
    when `encodes_in_windows` (the flag the class's `_encode` reads)."""
    frames, height, width = shape[-3:]
    ratio, temporal = model.spatial_compression_ratio, model.temporal_compression_ratio
    encodes = tile_grid(model, height, width)
    if encodes_in_windows and frames > model.tile_sample_min_num_frames:
        encodes *= len(range(0, frames, model.tile_sample_stride_num_frames))
    latent_frames = (frames - 1) // temporal + 1
    decodes = tile_grid(model, height // ratio, width // ratio, ratio)
    if model.use_framewise_decoding and latent_frames > model.tile_sample_min_num_frames // temporal:
        decodes *= len(range(0, latent_frames, model.tile_sample_stride_num_frames // temporal))
    return encodes + decodes


class CausalConvEnds:
    """The first and last convolutions of a family whose `conv_in`/`conv_out` wrap a causal `nn.Conv3d` in `.conv`
    (HunyuanVideo, LTX-Video): a mixin before the family's base class."""

    def last_conv(self, model) -> nn.Conv3d:
        return model.decoder.conv_out.conv

    def set_last_conv(self, model, conv: nn.Conv3d) -> None:
        model.decoder.conv_out.conv = conv

    def first_conv(self, model) -> nn.Conv3d:
        return model.encoder.conv_in.conv

    def set_first_conv(self, model, conv: nn.Conv3d) -> None:
        model.encoder.conv_in.conv = conv
