"""The autoencoder is a diffusers class itself (AutoencoderKL, AutoencoderTiny or AutoencoderDC: see
`models.families`), so an export is the trained module, bit for bit."""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from vaetrain.errors import ConfigError
from vaetrain.models.families import FAMILIES, downsampling_factor, family_of, family_of_config, family_of_folder
from vaetrain.models.inflate import inflate_channels
from vaetrain.models.quantizer import QuantizerConfig

__all__ = ["AutoencoderConfig", "build_autoencoder", "downsampling_factor"]

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass(frozen=True)
class AutoencoderConfig:
    """Architecture of a new autoencoder, or where to load a pretrained one from, and its posterior.

    Defaults are Stable Diffusion 1.x's f8c4 AutoencoderKL. When `pretrained` is set (a local diffusers
    folder or a Hugging Face Hub id), its stored config is the architecture: an architecture field set to
    anything else is a one-line error.
    """

    family: Literal["kl", "tiny", "dc", "vq", "wan", "hunyuan", "rae", "ltx"] = "kl"
    """kl: AutoencoderKL (SD's VAE); tiny: AutoencoderTiny (TAESD, usually distilled: `vaetrain distill`);
    dc: AutoencoderDC (deep compression, f32/f64); vq: VQModel (LDM's VQ-regularised models, VQGAN, FSQ: see
    `quantizer`); wan: AutoencoderKLWan (Wan 2.1's video VAE: clips, `data.frames`); hunyuan:
    AutoencoderKLHunyuanVideo (HunyuanVideo's video VAE); rae: AutoencoderRAE (a frozen DINOv2/SigLIP2/MAE encoder's
    patch tokens as the latent, a trained ViT decoder: `architecture` takes its fields, `encoder_pretrained` the
    encoder's weights); ltx: AutoencoderKLLTXVideo (LTX-Video's VAE, 1 + 8k frames). With `pretrained`: unset, or
    the folder's own class."""
    architecture: dict | None = None
    """More of the diffusers class's own config fields (e.g. AutoencoderTiny's `encoder_block_out_channels`,
    AutoencoderDC's `encoder_block_types`); the fields below that name the same thing take precedence where
    the class has them (block_out_channels, layers_per_block, norm_num_groups and mid_block_add_attention are
    AutoencoderKL's only)."""

    block_out_channels: list[int] = field(default_factory=lambda: [128, 256, 512, 512])
    """Channels of each resolution level; n levels downsample by 2^(n-1)."""
    layers_per_block: int = 2
    """Residual blocks per level."""
    latent_channels: int = 4
    """Channels of the latent."""
    in_channels: int = 3
    """Image channels in. With a 3-channel `pretrained` model, other values inflate its first convolution
    (models/inflate.py: 1 = sum of the RGB filters, extra channels = their mean)."""
    out_channels: int = 3
    """Image channels out (AutoencoderDC: equal to in_channels). With a 3-channel `pretrained` model, other
    values inflate its last convolution (1 = mean of the RGB rows, extra channels = their mean)."""
    norm_num_groups: int = 32
    """GroupNorm groups (LDM: 32)."""
    mid_block_add_attention: bool = True
    """Self-attention in the middle blocks."""
    pretrained: str | None = None
    """A diffusers folder or Hub id to start from (architecture fields must then be unset or agree with it)."""
    subfolder: str | None = None
    """Subfolder of `pretrained` holding the autoencoder (e.g. vae)."""
    encoder_pretrained: str | None = None
    """rae family: the frozen representation encoder's transformers weights, a Hub id (e.g.
    facebook/dinov2-with-registers-base, downloaded once into the Hugging Face cache) or a local folder; its
    config sets `architecture`'s encoder fields. Null: random weights from `architecture` (tests, plumbing only)."""
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
    quantizer: QuantizerConfig = field(default_factory=QuantizerConfig)
    """vq family: its quantiser (`models.quantizer.QuantizerConfig`)."""
    trainable: list[str] | None = None
    """Only parameters whose names start with one of these prefixes train (e.g. DC-AE's phases:
    [decoder.up_blocks.0, decoder.norm_out, decoder.conv_out]); None: all (subject to train_encoder)."""

    def __post_init__(self) -> None:
        if self.family != "kl" and self.posterior == "fixed":
            raise ConfigError(f"model.autoencoder.posterior: the {self.family} family is deterministic already; leave it 'learned' (unused)")
        if (
            self.family not in ("kl", "vq", "hunyuan")
            and self.pretrained is None
            and any(getattr(self, name) != default for name, default in (("norm_num_groups", 32), ("mid_block_add_attention", True)))
        ):
            raise ConfigError(
                f"model.autoencoder.norm_num_groups / mid_block_add_attention are AutoencoderKL's, VQModel's and AutoencoderKLHunyuanVideo's; "
                f"for {self.family} use model.autoencoder.architecture"
            )
        kl_fields = (("block_out_channels", [128, 256, 512, 512]), ("layers_per_block", 2), ("latent_channels", 4))
        if self.family == "rae" and self.pretrained is None and any(getattr(self, name) != default for name, default in kl_fields):
            raise ConfigError(
                "model.autoencoder.block_out_channels / layers_per_block / latent_channels do not apply to the rae family: use model.autoencoder.architecture"
            )
        if self.encoder_pretrained is not None and (self.family != "rae" or self.pretrained is not None):
            raise ConfigError("model.autoencoder.encoder_pretrained applies to a new rae-family model (a pretrained AutoencoderRAE holds its encoder)")
        if self.family != "vq" and self.quantizer != QuantizerConfig():
            raise ConfigError(f"model.autoencoder.quantizer applies to the vq family; the autoencoder is {self.family}")
        if self.trainable is not None and not self.trainable:
            raise ConfigError("model.autoencoder.trainable must name at least one parameter prefix (or be null for all)")
        if self.posterior_std < 0:
            raise ConfigError(f"model.autoencoder.posterior_std must be >= 0, got {self.posterior_std}")
        if self.latent_clamp is not None and self.latent_clamp <= 0:
            raise ConfigError(f"model.autoencoder.latent_clamp must be positive, got {self.latent_clamp}")


def build_autoencoder(config: AutoencoderConfig) -> nn.Module:
    """A new or pretrained autoencoder of the configured family, with gradient checkpointing, encoder
    freezing and `trainable` applied."""
    if config.pretrained:
        model = _load_pretrained(config.pretrained, config.subfolder, config.family)
        check_against_pretrained(config, model)
        if (config.in_channels, config.out_channels) != (3, 3) and family_of(model).image_channels(model)[0] == 3:
            model = inflate_channels(model, config.in_channels, config.out_channels)  # models/inflate.py's rule
    else:
        try:
            model = FAMILIES[config.family].build(config)
        except (TypeError, ValueError) as error:
            raise ConfigError(f"model.autoencoder.architecture does not fit {FAMILIES[config.family].class_name}: {_first_line(error)}") from error
    family_of(model).configure(model, config)
    if config.gradient_checkpointing:
        if not family_of(model).gradient_checkpointing:
            raise ConfigError(f"model.autoencoder.gradient_checkpointing is not available for {type(model).__name__} (models/families)")
        family_of(model).set_gradient_checkpointing(model, True)
    if not config.train_encoder:
        freeze_encoder(model)
    if config.trainable is not None:
        train_only(model, config.trainable)
    return model


_ARCHITECTURE_FIELDS = ("block_out_channels", "layers_per_block", "latent_channels", "norm_num_groups", "mid_block_add_attention")


def check_against_pretrained(config: AutoencoderConfig, model: nn.Module) -> None:
    """A pretrained model keeps its own architecture: an architecture field set (away from its default) to
    something the loaded model does not have, an `architecture` entry it contradicts, or another `family`
    than its class, is a one-line error instead of a setting silently ignored. Values equal to the model's
    (a preset layered under a phase preset) pass."""
    defaults = {f.name: f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default for f in dataclasses.fields(AutoencoderConfig)}
    family = family_of(model)
    given = {name: getattr(config, name) for name in _ARCHITECTURE_FIELDS if _plain(getattr(config, name)) != _plain(defaults[name])}
    given |= config.architecture or {}
    wrong = [
        f"{name}={_plain(value)} (the model has {_plain(model.config.get(name))})"
        for name, value in given.items()
        if _plain(value) != _plain(model.config.get(name))
    ]
    wrong += family.pretrained_differences(model, config)
    if config.family != defaults["family"] and config.family != family.name:
        wrong.insert(0, f"family={config.family} (the model is {family.class_name})")
    if wrong:
        raise ConfigError(
            f"model.autoencoder: {'; '.join(wrong)} differ from the pretrained model '{config.pretrained}', which keeps its own "
            "architecture: leave these unset (in_channels/out_channels inflate a 3-channel model)"
        )


def _plain(value):
    """Tuples as lists, as a config file writes them, for comparing."""
    return json.loads(json.dumps(value)) if isinstance(value, (list, tuple, dict)) else value


def train_only(model: nn.Module, prefixes: list[str]) -> None:
    """Freezes every parameter whose name starts with none of `prefixes` (each must match something)."""
    names = [name for name, _ in model.named_parameters()]
    for prefix in prefixes:
        if not any(name.startswith(prefix) for name in names):
            raise ConfigError(f"model.autoencoder.trainable: no parameter of {type(model).__name__} starts with '{prefix}'")
    for name, parameter in model.named_parameters():
        if not any(name.startswith(prefix) for prefix in prefixes):
            parameter.requires_grad_(False)


def autoencoder_from_state(config: dict, state_dict: dict[str, torch.Tensor]) -> nn.Module:
    """A fresh fp32 autoencoder (the family its config names) from diffusers' config holding exactly these
    weights (contiguous, whatever layout, compilation or sharding trained them), in eval mode."""
    return family_of_config(config).from_state(config, state_dict)


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


def load_pretrained_autoencoder(source: str | Path, subfolder: str | None = None, family: str = "kl") -> nn.Module:
    """diffusers' `from_pretrained` of a folder (any family, by its config's `_class_name`) or a Hub id
    (the `family` named, AutoencoderKL by default), in eval mode."""
    return family_of_folder(source, subfolder, default=family).load(source, subfolder)


def freeze_encoder(model: nn.Module) -> None:
    """Stops gradients into the encoder half, so a decoder fine-tune keeps the latent space unchanged."""
    for module in family_of(model).encoder_modules(model):
        module.requires_grad_(False)


def _load_pretrained(source: str, subfolder: str | None, family: str) -> nn.Module:
    path = Path(source).expanduser()
    if path.exists():
        try:
            return load_pretrained_autoencoder(path, subfolder, family)
        except (OSError, ValueError) as error:
            raise ConfigError(f"model.autoencoder.pretrained: cannot load '{source}': {_first_line(error)}") from error
    if not _HUB_ID.match(source):
        raise ConfigError(f"model.autoencoder.pretrained: path '{source}' does not exist")
    try:
        return load_pretrained_autoencoder(source, subfolder, family)
    except Exception as error:  # noqa: BLE001 - the Hub raises many kinds; all mean "cannot load"
        raise ConfigError(f"model.autoencoder.pretrained: '{source}' is neither a local folder nor loadable from the Hub: {_first_line(error)}") from error


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
