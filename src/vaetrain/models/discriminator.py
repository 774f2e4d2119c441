"""The discriminators: PatchGAN (pix2pix's NLayerDiscriminator, as in taming-transformers and LDM) here, the
VGG16 one of vqgan-training (`vgg_discriminator`) and RAE's frozen-DINO one (`dino_discriminator`), chosen by
`DiscriminatorConfig.kind`."""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import partial
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from vaetrain.errors import ConfigError
from vaetrain.frames import as_frames
from vaetrain.models.dino_discriminator import DinoDiscriminator
from vaetrain.models.vgg_discriminator import VGGDiscriminator

DiscriminatorNorm = Literal["batch", "group", "spectral", "spectral_group"]


@dataclass(frozen=True)
class DiscriminatorConfig:
    """Which discriminator, and its shape."""

    kind: Literal["patchgan", "patchgan3d", "vgg16", "dino"] = "patchgan"
    """patchgan: pix2pix's NLayerDiscriminator (LDM; clips frame by frame); patchgan3d: the same layers with 3D
    convolutions over clips (video families); vgg16: a trainable VGG16 with patch heads (vqgan-training); dino:
    a frozen DINO ViT with trained heads on several depths (RAE's)."""
    base_channels: int = 64
    """PatchGAN: channels of the first layer (doubling per layer, up to 8x)."""
    num_layers: int = 3
    """PatchGAN: strided layers (3: 70x70 patches)."""
    norm: DiscriminatorNorm = "spectral_group"
    """PatchGAN normalisation; spectral_group is per-sample, so batch size 1 and DDP need no syncing
    (LDM used batch; it becomes SyncBatchNorm on several GPUs)."""
    in_channels: int | None = None
    """Image channels (PatchGAN); null: the autoencoder's output channels."""
    vgg_backbone: Literal["pretrained", "random"] = "pretrained"
    """vgg16: start from torchvision's ImageNet VGG16 (needs the file) or from random weights (offline)."""
    dino_backbone: str = "facebook/dino-vits8"
    """dino: the frozen ViT, a Hub id (DINO ViT-S/8, the reference's `dino_vit_small_patch8_224.pth`; downloaded
    once) or a local folder of a transformers ViT."""
    dino_architecture: dict | None = None
    """dino: ViTConfig fields for a randomly initialised backbone instead (tests and offline plumbing only)."""
    dino_key_depths: tuple[int, ...] = (2, 5, 8, 11)
    """dino: blocks (0-based) whose tokens get a head besides the last block's (the reference's `key_depths`)."""
    dino_kernel: int = 9
    """dino: kernel of each head's residual Conv1d over tokens (the reference's `ks`)."""
    dino_input_size: int = 224
    """dino: side the image is resized to before the backbone (the reference's 224)."""
    diffaugment_prob: float = 0.0
    """dino: DiffAugment (translation, colour, cutout) on everything the discriminator reads, real and fake,
    each on with this probability (the RAE recipe: 1.0); 0: none."""
    diffaugment_cutout: float = 0.0
    """dino: DiffAugment's cutout side as a fraction of the image's (the RAE recipe: 0, no cutout)."""
    condition_on_latents: bool = False
    """PatchGAN: also read the latent the decoder decoded (nearest-upsampled to the image, concatenated to
    its channels), a conditional GAN as TAESD's decoder was trained (madebyollin/taesd issue #2)."""


def build_discriminator(config: DiscriminatorConfig, channels: int = 3, latent_channels: int | None = None) -> nn.Module:
    """The configured discriminator for images of `channels` channels (an explicit `in_channels` must match),
    conditioned on latents of `latent_channels` channels when the config asks for it."""
    if config.in_channels is not None and config.in_channels != channels:
        raise ConfigError(f"model.discriminator.in_channels={config.in_channels}, but the autoencoder writes {channels} channels")
    config = replace(config, in_channels=channels)
    dino = [
        f"model.discriminator.{name}"
        for name in ("dino_backbone", "dino_architecture", "dino_key_depths", "dino_kernel", "dino_input_size", "diffaugment_prob", "diffaugment_cutout")
        if getattr(config, name) != getattr(DiscriminatorConfig, name)
    ]
    if dino and config.kind != "dino":
        raise ConfigError(f"{', '.join(dino)}: settings of model.discriminator.kind=dino; the discriminator is {config.kind}")
    if config.kind in ("vgg16", "dino"):
        patchgan = [
            f"model.discriminator.{name}"
            for name in ("base_channels", "num_layers", "norm", "condition_on_latents")
            if getattr(config, name) != getattr(DiscriminatorConfig, name)
        ]
        if patchgan:
            raise ConfigError(f"{', '.join(patchgan)}: PatchGAN settings, which do not apply with model.discriminator.kind={config.kind}")
        if channels != 3:
            raise ConfigError(f"model.discriminator.kind={config.kind} reads RGB (an ImageNet backbone); the images have {channels} channels: use patchgan")
        if config.kind == "dino":
            if config.vgg_backbone != DiscriminatorConfig.vgg_backbone:
                raise ConfigError("model.discriminator.vgg_backbone applies to kind=vgg16 only; the discriminator is dino (dino_backbone)")
            if not 0 <= config.diffaugment_prob <= 1 or not 0 <= config.diffaugment_cutout < 1:
                raise ConfigError("model.discriminator.diffaugment_prob must be in [0, 1] and diffaugment_cutout in [0, 1)")
            return DinoDiscriminator(config)
        return VGGDiscriminator(config)
    if config.vgg_backbone != DiscriminatorConfig.vgg_backbone:
        raise ConfigError(f"model.discriminator.vgg_backbone={config.vgg_backbone} applies to kind=vgg16 only; the discriminator is {config.kind}")
    if config.condition_on_latents and not latent_channels:
        raise ValueError("build_discriminator: condition_on_latents needs the latent channels")
    return PatchDiscriminator(config, latent_channels if config.condition_on_latents else 0, dims=3 if config.kind == "patchgan3d" else 2)


class PatchDiscriminator(nn.Module):
    """Maps an image to a grid of real/fake logits, one per overlapping patch (70x70 at 3 layers).

    `dims=3` reads clips (B, C, T, H, W) with the same layers as 3D convolutions: kernel (3, 4, 4), stride
    (1, s, s), padding (1, 1, 1), so time is never downsampled and each logit sees 1 + 2 (num_layers + 2)
    frames (11 at 3 layers) by 70x70 pixels. This transposition of pix2pix's layout to clips is vaetrain's own
    (Wan's discriminator is not released); it judges motion as well as frames."""

    def __init__(self, config: DiscriminatorConfig | None = None, condition_channels: int = 0, dims: int = 2) -> None:
        super().__init__()
        self.config = config = config or DiscriminatorConfig()
        self.condition_channels = condition_channels
        self.dims = dims
        _conv = partial(_conv_nd, dims=dims)
        spectral = config.norm in ("spectral", "spectral_group")
        channels = [config.base_channels * min(2**i, 8) for i in range(config.num_layers + 1)]

        layers: list[nn.Module] = [
            _conv((config.in_channels or 3) + condition_channels, channels[0], stride=2, spectral=spectral, bias=True),
            nn.LeakyReLU(0.2, inplace=True),
        ]
        for i in range(1, config.num_layers + 1):
            stride = 1 if i == config.num_layers else 2
            layers += [
                _conv(channels[i - 1], channels[i], stride=stride, spectral=spectral, bias=config.norm == "spectral"),
                *_norm(config.norm, channels[i], dims),
                nn.LeakyReLU(0.2, inplace=True),
            ]
        layers.append(_conv(channels[-1], 1, stride=1, spectral=spectral, bias=True))
        self.layers = nn.Sequential(*layers)
        self.apply(_init_weights)

    def forward(self, images: torch.Tensor, condition: torch.Tensor | None = None) -> torch.Tensor:
        """Logits of `images` (clips: of each frame); a conditioned discriminator also reads `condition`
        (latents, per image)."""
        images = as_frames(images) if self.dims == 2 else images
        if self.condition_channels:
            if condition is None:
                raise ValueError("PatchDiscriminator: conditioned on latents, but no condition was given")
            condition = F.interpolate(condition.to(images.dtype), size=images.shape[-2:], mode="nearest")
            images = torch.cat([images, condition], dim=1)
        return self.layers(images)

    def set_power_iteration(self, enabled: bool) -> None:
        """Whether the next forwards advance spectral norm's power iteration (it runs in every training
        forward otherwise). The training loop advances it once per optimizer step, so the estimate does
        not depend on how a step's batch is split into micro-batches or processes."""
        for module in self.modules():
            if type(module).__name__ == "_SpectralNorm":
                module.train(enabled)


def synchronise_batch_norm(discriminator: nn.Module, world_size: int, device_type: str) -> nn.Module:
    """`norm: batch` under data parallelism: SyncBatchNorm, so statistics cover the global batch as in one
    process. The other norms are per-sample and need nothing. PyTorch synchronises batch norm on GPUs only."""
    if discriminator.config.kind in ("vgg16", "dino") or discriminator.config.norm != "batch" or world_size <= 1:
        return discriminator
    if device_type == "cpu":
        raise ConfigError(
            "model.discriminator.norm=batch with several processes needs SyncBatchNorm, which PyTorch runs on GPUs "
            "only; use norm: spectral_group (per-sample) on CPU"
        )
    return nn.SyncBatchNorm.convert_sync_batchnorm(discriminator)


def _conv_nd(in_channels: int, out_channels: int, *, stride: int, spectral: bool, bias: bool, dims: int = 2) -> nn.Module:
    if dims == 3:
        conv = nn.Conv3d(in_channels, out_channels, kernel_size=(3, 4, 4), stride=(1, stride, stride), padding=1, bias=bias)
    else:
        conv = nn.Conv2d(in_channels, out_channels, kernel_size=4, stride=stride, padding=1, bias=bias)
    return spectral_norm(conv) if spectral else conv


def _norm(norm: DiscriminatorNorm, channels: int, dims: int = 2) -> list[nn.Module]:
    if norm == "batch":
        return [nn.BatchNorm3d(channels) if dims == 3 else nn.BatchNorm2d(channels)]
    if norm in ("group", "spectral_group"):
        return [nn.GroupNorm(min(32, channels), channels)]
    return []


def _init_weights(module: nn.Module) -> None:
    """pix2pix's initialisation: N(0, 0.02) convolutions, N(1, 0.02) norm scales."""
    if isinstance(module, (nn.Conv2d, nn.Conv3d)):
        weight = module.parametrizations.weight.original if hasattr(module, "parametrizations") else module.weight
        nn.init.normal_(weight, 0.0, 0.02)
    elif isinstance(module, (nn.BatchNorm2d, nn.BatchNorm3d, nn.GroupNorm)):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)
