"""How learnable a discrete autoencoder's tokens are: the same small causal transformer, trained with the
same budget on each model's code indices (raster order), and its validation negative log-likelihood per
token and bits per image. Two tokenizers that reconstruct alike can differ a lot here: this is what an
autoregressive or masked image model on their tokens will pay.

The model: a BOS token, learned positions, pre-norm `nn.TransformerEncoder` layers under a causal mask,
next-token cross-entropy; AdamW with a short warm-up, gradient clipping at 1. The validation set is the
last `validation_size` share of the images (never trained on); lower NLL: easier tokens.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from vaetrain.data.sample_sets import Loading, SampleSet, evaluation_samples, pixels_of
from vaetrain.errors import ConfigError
from vaetrain.models.families import encode, family_of
from vaetrain.models.quantizer import code_indices


@dataclass(frozen=True)
class TokenProbeConfig:
    """The token probe's fixed budget: every tokenizer gets exactly this."""

    steps: int = 2000
    batch_size: int = 32
    lr: float = 3e-4
    layers: int = 4
    heads: int = 4
    width: int = 128
    validation_size: float = 0.1
    """Share of the images held out for the validation NLL (the last ones)."""
    seed: int = 0


@dataclass
class TokenProbeResult:
    nll_per_token: float  # nats
    bits_per_image: float
    tokens_per_image: int
    codes: int
    curve: list[tuple[int, float]] = field(default_factory=list)  # (step, validation NLL per token)
    seconds: float = 0.0

    def as_row(self) -> dict:
        return {
            "token_nll": self.nll_per_token,
            "token_bits_per_image": self.bits_per_image,
            "token_curve": self.curve,
            "tokens_per_image": self.tokens_per_image,
            "token_probe_seconds": round(self.seconds, 1),
        }


class TokenModel(nn.Module):
    def __init__(self, codes: int, length: int, config: TokenProbeConfig) -> None:
        super().__init__()
        self.embed = nn.Embedding(codes + 1, config.width)  # the last row is BOS
        self.position = nn.Parameter(torch.zeros(1, length, config.width))
        layer = nn.TransformerEncoderLayer(config.width, config.heads, 4 * config.width, dropout=0.0, batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, config.layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(config.width)
        self.head = nn.Linear(config.width, codes)
        self.codes = codes
        nn.init.normal_(self.position, std=0.02)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Logits of each token given the ones before it (the first given BOS)."""
        inputs = torch.cat([torch.full_like(tokens[:, :1], self.codes), tokens[:, :-1]], dim=1)
        mask = nn.Transformer.generate_square_subsequent_mask(tokens.shape[1], device=tokens.device)
        hidden = self.blocks(self.embed(inputs) + self.position[:, : tokens.shape[1]], mask=mask, is_causal=True)
        return self.head(self.norm(hidden))


def nll(model: TokenModel, tokens: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(model(tokens).flatten(0, 1), tokens.flatten())


@torch.no_grad()
def tokens_of(model: nn.Module, images: SampleSet, max_images: int | None, device: torch.device, loading: Loading = Loading()) -> torch.Tensor:
    """(images, tokens) code indices in raster order of up to `max_images` images at a fixed size."""
    codebook = family_of(model).codebook(model)
    if codebook is None:
        raise ConfigError(f"token probe: {family_of(model).class_name} has no codebook (a discrete autoencoder, the vq family, has)")
    if images.resolution == "native":
        raise ConfigError("token probe: --data.resolution must be a number of pixels (every image needs the same number of tokens)")
    parts = []
    for batch in evaluation_samples(images, part="all", max_images=max_images, **loading.of()):
        pixels = pixels_of(batch).to(device)
        if len(pixels):
            parts.append(code_indices(codebook, encode(model, pixels).mean).cpu())
    if not parts:
        raise ConfigError(f"token probe: no usable images in '{images.source.path}'")
    return torch.cat(parts)


def train_token_probe(tokens: torch.Tensor, codes: int, config: TokenProbeConfig, device: torch.device | str = "cpu") -> TokenProbeResult:
    """Trains a fresh model on `tokens` (images, length) and reports the held-out NLL."""
    held = max(1, round(len(tokens) * config.validation_size))
    if len(tokens) - held < 1:
        raise ConfigError(f"token probe: {len(tokens)} images are too few (need at least 2)")
    train, validation = tokens[:-held].to(device), tokens[-held:].to(device)
    generator = torch.Generator().manual_seed(config.seed)
    torch.manual_seed(config.seed)
    model = TokenModel(codes, tokens.shape[1], config).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=0.0)
    curve, start, every = [], time.perf_counter(), max(1, config.steps // 10)
    for step in range(1, config.steps + 1):
        for group in optimizer.param_groups:
            group["lr"] = config.lr * min(1.0, step / max(1, config.steps // 20))
        batch = train[torch.randint(len(train), (config.batch_size,), generator=generator).to(device)]
        loss = nll(model, batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        if step % every == 0 or step == config.steps:
            curve.append((step, validation_nll(model, validation, config.batch_size)))
    per_token = curve[-1][1]
    return TokenProbeResult(per_token, per_token / math.log(2) * tokens.shape[1], tokens.shape[1], codes, curve, time.perf_counter() - start)


@torch.no_grad()
def validation_nll(model: TokenModel, tokens: torch.Tensor, batch_size: int) -> float:
    was_training = model.training
    model.eval()
    total = sum(float(nll(model, chunk)) * chunk.numel() for chunk in tokens.split(batch_size))
    model.train(was_training)
    return total / tokens.numel()
