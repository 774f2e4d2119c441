"""VQModel (LDM's VQ-regularised first stage; taming-transformers' VQGAN): encoder -> quant_conv -> a
codebook -> post_quant_conv -> decoder. Deterministic: the latent is the encoder's output before
quantisation (what LDM's diffusion model works on, the codebook being absorbed into the decoder); decoding
quantises it, as diffusers' `VQModel.decode` does. Training quantises through `models.quantizer.lookup`
(the same lookup; `training.features.codebook`) and decodes the quantised latents directly. Its tokens are
the code indices (`models.quantizer`: their use, the token probe).
"""

from __future__ import annotations

import torch
from torch import nn

from vaetrain.models.families.base import Family, Posterior
from vaetrain.models.families.kl import ldm_stack
from vaetrain.models.quantizer import TokenUsage, code_indices, fsq_grid


class VQFamily(Family):
    name = "vq"
    class_name = "VQModel"
    deterministic = True

    def build(self, config) -> nn.Module:
        from diffusers import VQModel

        quantizer = config.quantizer
        fields = ldm_stack(config) | dict(num_vq_embeddings=quantizer.size, vq_embed_dim=quantizer.dim(config.latent_channels))
        model = VQModel(**(fields | (config.architecture or {})))
        if quantizer.kind == "fsq":  # the grid is the codebook
            model.quantize.embedding.weight.data.copy_(fsq_grid(quantizer.levels))
        return model

    def configure(self, model, config) -> None:
        """FSQ's grid is fixed and an EMA codebook moves by its statistics (after each finite update), not
        by its loss: neither is a trained parameter. New or pretrained alike."""
        if config.quantizer.kind == "fsq" or config.quantizer.ema_decay is not None:
            model.quantize.embedding.requires_grad_(False)

    def encode(self, model, images) -> Posterior:
        return Posterior(model.encode(images).latents)

    def decode(self, model, latents: torch.Tensor) -> torch.Tensor:
        return model.decode(latents).sample

    def decode_quantized(self, model, quantized: torch.Tensor) -> torch.Tensor:
        """The decoder of latents already quantised (training's `lookup`)."""
        return model.decode(quantized, force_not_quantize=True).sample

    def codebook(self, model) -> torch.Tensor:
        """The code vectors (codes, dim) the latents quantise to."""
        return model.quantize.embedding.weight

    def vocabulary(self, model) -> int:
        return self.codebook(model).shape[0]

    def tokens(self, model, latents: torch.Tensor) -> torch.Tensor:
        return code_indices(self.codebook(model), latents)

    def token_usage(self, model) -> TokenUsage:
        return TokenUsage(self.vocabulary(model))

    def pretrained_differences(self, model, config) -> list[str]:
        if config.quantizer == type(config.quantizer)():
            return []
        size, dim = config.quantizer.size, config.quantizer.dim(model.config.latent_channels)
        shape = tuple(self.codebook(model).shape)
        return [f"quantizer {size} codes of dimension {dim} (the model has {shape})"] if (size, dim) != shape else []

    def latent_channels(self, model) -> int:
        return model.config.vq_embed_dim or model.config.latent_channels

    def downsampling_factor(self, model) -> int:
        return 2 ** (len(model.config.block_out_channels) - 1)

    def width(self, model) -> int:
        return model.config.block_out_channels[0]

    def encoder_modules(self, model) -> list[nn.Module]:
        return [model.encoder, model.quant_conv]

    def shard_units(self, model) -> list[nn.Module]:
        return super().shard_units(model) + [model.quant_conv, model.quantize, model.post_quant_conv]

    def describe(self, model) -> str:
        config = model.config
        return (
            f"VQModel, block_out_channels {list(config.block_out_channels)}, layers_per_block {config.layers_per_block}, "
            f"{config.num_vq_embeddings} codes of dimension {self.latent_channels(model)}"
        )
