"""AutoencoderRAE (representation autoencoder, Zheng et al. 2025, bytetriper/RAE): a frozen representation
encoder (DINOv2-with-registers, SigLIP2 or MAE, a transformers model) whose patch tokens are the latent as
a 2-D map (channels = the encoder's width), and a trained ViT-MAE decoder; the decoder's patch size decides
the output size (`patch_size * tokens per side`: 16 x 16 tokens and patch 16 give 256 px, patch 32 512 px).

diffusers' class reads and writes images in [0, 1] (the reference's `ToTensor()` range, normalised inside by
`encoder_norm_mean`/`std`); vaetrain's [-1, 1] is mapped at `encode`/`decode`, so an export is the class as
the released checkpoints use it. `noise_tau` is diffusers' own `_noising` (per-sample sigma ~ U(0, tau),
reference `stage1/rae.py`, `RAE.noising`), applied only while the model is in training mode; the latent
normalisation (`latents_mean`/`latents_std`) is applied inside `encode` (convention `in_model`)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from vaetrain.errors import ConfigError, PretrainedWeightsUnavailable
from vaetrain.models.families.base import Family, Posterior

_ENCODER_FIELDS = {  # AutoencoderRAE field -> the transformers config's
    "encoder_hidden_size": "hidden_size",
    "encoder_patch_size": "patch_size",
    "encoder_num_hidden_layers": "num_hidden_layers",
}
_ENCODER_TYPES = {"dinov2_with_registers": "dinov2", "siglip_vision_model": "siglip2", "siglip2_vision_model": "siglip2", "vit_mae": "mae"}


class RAEFamily(Family):
    name = "rae"
    class_name = "AutoencoderRAE"
    latent_conventions = ("in_model",)
    conv_in_prefixes = ()
    gradient_checkpointing = True  # the decoder's layers, by `set_gradient_checkpointing` (diffusers' class has none)

    def build(self, config) -> nn.Module:
        from diffusers import AutoencoderRAE

        architecture = dict(config.architecture or {})
        encoder = None
        if config.encoder_pretrained:
            encoder = load_encoder(config.encoder_pretrained)
            architecture = _with_encoder_fields(architecture, encoder, config.encoder_pretrained)
        model = AutoencoderRAE(**architecture)
        if encoder is not None:
            _copy_encoder(model, encoder, config.encoder_pretrained)
        return model

    def configure(self, model, config) -> None:
        """The encoder is frozen whatever the settings say (RAE trains the decoder only); the decoder's layers
        can recompute their activations in backward (`set_gradient_checkpointing`)."""
        if config.train_encoder:
            raise ConfigError("model.autoencoder.train_encoder: the rae family's encoder is frozen (RAE trains the decoder); set it to false")
        model.encoder.requires_grad_(False)
        for layer in model.decoder.decoder_layers:
            layer.__class__ = _checkpointed_layer_class(type(layer))

    def encode(self, model, images) -> Posterior:
        """The tokens of images at the decoder's output size; other sizes in tiles of that size (padded by
        repeating the border), their token maps side by side (so `eval` and the report read any image)."""
        side = output_side(model)
        if tuple(images.shape[-2:]) == (side, side):
            return Posterior(model.encode((images + 1) / 2).latent)
        tiles, grid = _to_tiles(images, side)
        return Posterior(_from_tiles(model.encode((tiles + 1) / 2).latent, len(images), grid))

    def decode(self, model, latents) -> torch.Tensor:
        tokens = int(model.num_patches**0.5)
        if tuple(latents.shape[-2:]) == (tokens, tokens):
            return model.decode(latents).sample * 2 - 1
        if latents.shape[-2] % tokens or latents.shape[-1] % tokens:
            raise ConfigError(f"AutoencoderRAE decodes {tokens} x {tokens} token maps (or tilings of them); got {tuple(latents.shape[-2:])}")
        tiles, grid = _to_tiles(latents, tokens)
        return _from_tiles(model.decode(tiles).sample * 2 - 1, len(latents), grid)

    def image_channels(self, model) -> tuple[int, int]:
        return model.config.num_channels, model.config.num_channels

    def latent_channels(self, model) -> int:
        return model.config.encoder_hidden_size

    def last_conv(self, model) -> nn.Linear:
        """The decoder's `decoder_pred` (a Linear on the tokens; the reference's adaptive-weight layer,
        `train_stage1.py`: `last_layer = decoder.decoder_pred.weight`)."""
        return model.decoder.decoder_pred

    def last_conv_chunk(self, conv, args) -> tuple[torch.Tensor, bool]:
        return args[0][:, 1:], True  # the decoder drops its class token after decoder_pred

    def last_layer_output_gradient(self, model, grad_reconstruction: torch.Tensor) -> torch.Tensor:
        """d loss / d decoder_pred's output (B, tokens, p*p*C) from d loss / d reconstruction in [-1, 1]: the
        reconstruction is 2 (logits x std_c + mean_c) - 1, unpatchified (diffusers' `unpatchify`, inverted)."""
        std = model.encoder_std.to(grad_reconstruction).view(1, -1, 1, 1)
        grad = grad_reconstruction * 2 * std
        b, c, h, w = grad.shape
        p = model.decoder.patch_size
        grad = grad.reshape(b, c, h // p, p, w // p, p)
        return torch.einsum("nchpwq->nhwpqc", grad).reshape(b, (h // p) * (w // p), p * p * c)

    def set_last_conv(self, model, conv) -> None:
        raise ConfigError("the rae family's decoder writes RGB (its patch head); out_channels other than 3 are not supported")

    def first_conv(self, model) -> nn.Module:
        raise ConfigError("the rae family's encoder reads RGB as its representation model was trained; in_channels other than 3 are not supported")

    def check_sides(self, model, sides: list[int]) -> str | None:
        """Training reads images of the decoder's output size only."""
        side = output_side(model)
        if any(s != side for s in sides):
            return (
                f"data.resolution {sorted(set(sides))}: this AutoencoderRAE writes {side} px images (decoder patch_size {model.config.patch_size} x "
                f"{side // model.config.patch_size} tokens); train at {side} px or change the decoder's patch_size"
            )
        return None

    def downsampling_factor(self, model) -> int:
        """Pixels per latent token along a side of the decoder's output (its patch size)."""
        return model.config.patch_size

    def width(self, model) -> int:
        return model.config.decoder_hidden_size

    def encoder_modules(self, model) -> list[nn.Module]:
        return [model.encoder]

    def shard_units(self, model) -> list[nn.Module]:
        return [*model.decoder.decoder_layers, model.decoder, model.encoder, model]

    def set_gradient_checkpointing(self, model, enabled: bool) -> None:
        for module in (model.decoder, *model.decoder.decoder_layers):
            module.gradient_checkpointing = enabled

    def set_latent_fields(self, model, fields: dict) -> None:
        """The config fields and the buffers `encode`/`decode` read (diffusers saves both)."""
        super().set_latent_fields(model, fields)
        for name in ("latents_mean", "latents_std"):
            if fields.get(name) is not None:
                getattr(model, f"_{name}").data = torch.tensor(fields[name], dtype=torch.float32, device=model.encoder_std.device)

    def describe(self, model) -> str:
        c = model.config
        return (
            f"AutoencoderRAE, frozen {c.encoder_type} encoder (width {c.encoder_hidden_size}, patch {c.encoder_patch_size}, input "
            f"{c.encoder_input_size} px), ViT decoder {c.decoder_num_hidden_layers} x {c.decoder_hidden_size}, patch {c.patch_size}"
        )


def output_side(model) -> int:
    """The side of the images the decoder writes (and training reads): patch_size x tokens per side."""
    return model.config.patch_size * int(model.num_patches**0.5)


def _to_tiles(x: torch.Tensor, side: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """(B, C, H, W) -> (B * rows * cols, C, side, side), padded at the bottom and right by repeating the border."""
    height, width = x.shape[-2:]
    rows, cols = -(-height // side), -(-width // side)
    x = torch.nn.functional.pad(x, (0, cols * side - width, 0, rows * side - height), mode="replicate")
    b, c = x.shape[:2]
    return x.view(b, c, rows, side, cols, side).permute(0, 2, 4, 1, 3, 5).reshape(b * rows * cols, c, side, side), (rows, cols)


def _from_tiles(tiles: torch.Tensor, batch: int, grid: tuple[int, int]) -> torch.Tensor:
    rows, cols = grid
    c, h, w = tiles.shape[1:]
    return tiles.view(batch, rows, cols, c, h, w).permute(0, 3, 1, 4, 2, 5).reshape(batch, c, rows * h, cols * w)


_CHECKPOINTED: dict[type, type] = {}


def _checkpointed_layer_class(layer_class: type) -> type:
    """diffusers' `ViTMAELayer` with a forward that recomputes its activations in backward when its decoder's
    `gradient_checkpointing` flag is on (`torch.utils.checkpoint`, non-reentrant). A subclass swapped in, so
    parameter names, state dicts and deep copies (the EMA) are unchanged."""
    if layer_class.__name__.startswith("Checkpointed"):
        return layer_class
    if layer_class not in _CHECKPOINTED:

        def forward(self, hidden_states):
            if getattr(self, "gradient_checkpointing", False) and torch.is_grad_enabled():
                return checkpoint(layer_class.forward, self, hidden_states, use_reentrant=False)
            return layer_class.forward(self, hidden_states)

        _CHECKPOINTED[layer_class] = type(f"Checkpointed{layer_class.__name__}", (layer_class,), {"forward": forward})
    return _CHECKPOINTED[layer_class]


def load_encoder(source: str) -> nn.Module:
    """The transformers model of a Hub id or local folder (facebook/dinov2-with-registers-base, a SigLIP2 or an
    MAE), downloaded once into the Hugging Face cache; a one-line error when it cannot be had."""
    from transformers import AutoModel

    try:
        model = AutoModel.from_pretrained(source)
    except Exception as error:  # noqa: BLE001 - hub, network and format errors all mean "cannot load"
        raise PretrainedWeightsUnavailable(
            f"model.autoencoder.encoder_pretrained: cannot load '{source}' ({type(error).__name__}); download it once with network access "
            "(it is cached), or give a local folder of the transformers model"
        ) from error
    if model.config.model_type in ("siglip", "siglip2"):
        model = model.vision_model if hasattr(model, "vision_model") else model
    return model


def _with_encoder_fields(architecture: dict[str, Any], encoder: nn.Module, source: str) -> dict[str, Any]:
    """AutoencoderRAE's encoder fields read from the loaded model's config; a given one that differs is a one-line error."""
    config = encoder.config
    kind = _ENCODER_TYPES.get(config.model_type)
    if kind is None:
        raise ConfigError(f"model.autoencoder.encoder_pretrained: '{source}' is a {config.model_type} model; RAE's encoders are dinov2, siglip2 and mae")
    found = {"encoder_type": kind} | {field: getattr(config, name) for field, name in _ENCODER_FIELDS.items()}
    wrong = [f"{k}={architecture[k]} (the encoder has {v})" for k, v in found.items() if k in architecture and architecture[k] != v]
    if config.hidden_size // 64 != config.num_attention_heads:
        wrong.append(f"{config.num_attention_heads} heads (AutoencoderRAE builds hidden_size / 64 = {config.hidden_size // 64})")
    if wrong:
        raise ConfigError(f"model.autoencoder.architecture: {'; '.join(wrong)} differ from '{source}'")
    return architecture | found


def _copy_encoder(model: nn.Module, encoder: nn.Module, source: str) -> None:
    """The loaded weights into AutoencoderRAE's encoder; its final layer norm has no affine parameters (the
    reference's `Dinov2withNorm`, diffusers' `_build_encoder`), so those are the only keys left over."""
    state = {k: v for k, v in encoder.state_dict().items() if not k.endswith(("layernorm.weight", "layernorm.bias"))}
    missing, unexpected = model.encoder.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ConfigError(
            f"model.autoencoder.encoder_pretrained: '{source}' does not fit AutoencoderRAE's encoder (missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
    model.encoder.requires_grad_(False)
