"""How easily a diffusion model learns a VAE's latents: the same small diffusion transformer, trained with
the same budget on each VAE's latents, and its validation loss and samples.

Rectified flow (flow matching with straight paths, as SD3): x_t = (1 - t) x0 + t eps, the model predicts
v = eps - x0, loss MSE, t ~ U(0, 1); samples integrate dx/dt = v from t = 1 (noise) to 0 with Euler steps.
The model is diffusers' `DiTTransformer2DModel` (adaLN-zero, one class label: unconditional). The
validation loss is the mean over a fixed set of (held-out latent, t, noise) triples, so it compares across
VAEs; lower means the latents are easier to model at this budget.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from diffusers import DiTTransformer2DModel

from vaetrain.errors import ConfigError

SIZES = {  # layers, heads, head dimension
    "tiny": (4, 4, 32),
    "small": (8, 6, 64),
    "base": (12, 12, 64),
}


@dataclass(frozen=True)
class ProbeConfig:
    """The probe's fixed budget: every VAE gets exactly this."""

    model_size: Literal["tiny", "small", "base"] = "tiny"
    steps: int = 2000
    batch_size: int = 32
    lr: float = 3e-4
    validation_size: float = 0.1
    """Share of the latents held out for the validation loss (the last ones)."""
    validation_triples: int = 512
    samples: int = 64
    """Latents sampled (and decoded by the caller) at the end."""
    sampling_steps: int = 25
    seed: int = 0

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 1:
            raise ConfigError("probe: --steps and --batch-size must be >= 1")


@dataclass
class DiffusabilityResult:
    validation_loss: float
    curve: list[tuple[int, float]] = field(default_factory=list)  # (step, validation loss)
    seconds: float = 0.0
    latent_shape: tuple[int, ...] = ()
    samples: torch.Tensor | None = None  # normalised latents, decode them with the VAE's statistics


def build_model(config: ProbeConfig, channels: int, side: int) -> DiTTransformer2DModel:
    layers, heads, head_dim = SIZES[config.model_size]
    patch = 1 if side <= 16 else 2
    if side % patch:
        raise ConfigError(f"probe: latent side {side} is not divisible by the patch size {patch}")
    return DiTTransformer2DModel(
        num_attention_heads=heads,
        attention_head_dim=head_dim,
        in_channels=channels,
        out_channels=channels,
        num_layers=layers,
        sample_size=side,
        patch_size=patch,
        num_embeds_ada_norm=1,
        norm_type="ada_norm_zero",
    )


def velocity(model: DiTTransformer2DModel, noisy: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    labels = torch.zeros(len(noisy), dtype=torch.long, device=noisy.device)
    return model(noisy, timestep=t * 1000, class_labels=labels).sample


def flow_matching_loss(model, latents: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    tt = t.view(-1, 1, 1, 1)
    return F.mse_loss(velocity(model, (1 - tt) * latents + tt * noise, t), noise - latents)


def train_probe(latents: torch.Tensor, config: ProbeConfig, *, progress=None) -> DiffusabilityResult:
    """Trains a fresh model on `latents` (N, C, h, w; already normalised) and reports. `progress(step,
    loss)` is called as it goes (a progress bar)."""
    generator = torch.Generator().manual_seed(config.seed)
    held = max(1, round(len(latents) * config.validation_size))
    if len(latents) - held < 1:
        raise ConfigError(f"probe: {len(latents)} images are too few (need at least 2)")
    train, validation = latents[:-held], latents[-held:]
    device = latents.device
    picks = torch.randint(len(validation), (config.validation_triples,), generator=generator)
    triples = (
        validation[picks],
        torch.rand(config.validation_triples, generator=generator).to(device),
        torch.randn(config.validation_triples, *latents.shape[1:], generator=generator).to(device),
    )
    torch.manual_seed(config.seed)
    model = build_model(config, latents.shape[1], latents.shape[-1]).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=0.0)
    curve, start = [], time.perf_counter()
    every = max(1, config.steps // 10)
    for step in range(1, config.steps + 1):
        lr = config.lr * min(1.0, step / max(1, config.steps // 20))  # a short linear warm-up
        for group in optimizer.param_groups:
            group["lr"] = lr
        batch = train[torch.randint(len(train), (config.batch_size,), generator=generator).to(device)]
        t = torch.rand(config.batch_size, generator=generator).to(device)
        noise = torch.randn(batch.shape, generator=generator).to(device)
        loss = flow_matching_loss(model, batch, t, noise)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        if step % every == 0 or step == config.steps:
            curve.append((step, validation_loss(model, triples, config.batch_size)))
        if progress is not None:
            progress(step, loss.item())
    samples = sample(model, config, latents.shape[1:], device) if config.samples else None
    return DiffusabilityResult(curve[-1][1], curve, time.perf_counter() - start, tuple(latents.shape[1:]), samples)


@torch.no_grad()
def validation_loss(model, triples, batch_size: int) -> float:
    was_training = model.training
    model.eval()
    latents, times, noise = triples
    total = 0.0
    for i in range(0, len(latents), batch_size):
        total += float(flow_matching_loss(model, latents[i : i + batch_size], times[i : i + batch_size], noise[i : i + batch_size])) * len(
            latents[i : i + batch_size]
        )
    model.train(was_training)
    return total / len(latents)


@torch.no_grad()
def sample(model, config: ProbeConfig, shape: tuple[int, ...], device) -> torch.Tensor:
    """Euler integration of dx/dt = v from t = 1 to 0 in `sampling_steps` equal steps, from seeded noise."""
    model.eval()
    generator = torch.Generator().manual_seed(config.seed + 1)
    x = torch.randn(config.samples, *shape, generator=generator).to(device)
    times = torch.linspace(1.0, 0.0, config.sampling_steps + 1, device=device)
    for t, t_next in zip(times[:-1], times[1:]):
        x = x + (t_next - t) * velocity(model, x, t.expand(len(x)))
    return x


def standardisation(latents: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(shift, scale) per channel with (z - shift) * scale of zero mean and unit variance over `latents`
    (N, C, h, w): the probe normalises every VAE's latents alike, by statistics of its own images, whatever
    fields the VAE's config holds, so its losses compare across any VAEs."""
    flat = latents.double().transpose(0, 1).flatten(1)
    shift, std = flat.mean(dim=1), flat.std(dim=1, correction=0).clamp_min(1e-12)
    return shift.view(1, -1, 1, 1).to(latents.dtype), (1 / std).view(1, -1, 1, 1).to(latents.dtype)
