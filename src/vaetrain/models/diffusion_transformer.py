"""The diffusion transformer on latents: diffusers' `DiTTransformer2DModel` (adaLN-zero, one class label:
unconditional) trained by rectified flow, shared by the diffusability probe (`evaluation.diffusability_probe`)
and end-to-end tuning (`training.features.end_to_end`), where it is REPA-E's SiT.

Rectified flow (SiT's `linear` path, REPA-E `models/sit.py`, `SiT.interpolant` and `SiT.forward`):
x_t = (1 - t) x0 + t eps, the model predicts v = d(alpha)/dt x0 + d(sigma)/dt eps = eps - x0, loss the
mean squared error, t ~ U(0, 1) (`weighting: uniform`). The model reads t x 1000 (diffusers' DiT embeds
timesteps of a 1000-step schedule; SiT embeds t itself: the same sinusoidal embedding at a scaled frequency).

`SiT` adds what REPA-E's SiT has around the transformer: the BatchNorm of the input latents (no affine
part, eps 1e-4, `SiT.__init__`: "we disable affine parameters in the batch norm layer, to avoid affine
hacking diffusion loss"), and the REPA projector (`build_mlp`: Linear-SiLU-Linear-SiLU-Linear from the
hidden size through `projector_dim` to the representation encoder's feature size) on the hidden tokens
after block `encoder_depth`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers import DiTTransformer2DModel
from torch import nn

from vaetrain.errors import ConfigError

SIZES = {  # layers, heads, head dimension
    "tiny": (4, 4, 32),
    "small": (8, 6, 64),
    "base": (12, 12, 64),
    "xl": (28, 16, 72),  # SiT-XL: hidden 1152 (REPA-E models/sit.py, `SiT_XL_2`)
}


def build_transformer(size: str | tuple[int, int, int], channels: int, side: int, patch: int | None = None) -> DiTTransformer2DModel:
    """A DiT of `size` (a name of `SIZES` or (layers, heads, head dimension)) on (channels, side, side)
    latents; `patch` None: 1 up to side 16, else 2."""
    layers, heads, head_dim = SIZES[size] if isinstance(size, str) else size
    patch = patch or (1 if side <= 16 else 2)
    if side % patch:
        raise ConfigError(f"diffusion transformer: latent side {side} is not divisible by the patch size {patch}")
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


class _Stop(Exception):
    """Ends a forward after the aligned block (REPA-E's `align_only` shortcut)."""


class SiT(nn.Module):
    """REPA-E's SiT as `BatchNorm -> DiT`, with the REPA projector on block `encoder_depth`'s tokens.

    The BatchNorm's statistics are buffers (`batch_norm.running_mean`, `running_var`) that `normalise`
    always reads (see `training.features.end_to_end` for why and when they move); they are the latent
    normalisation the export writes."""

    def __init__(self, transformer: DiTTransformer2DModel, feature_dim: int, encoder_depth: int = 8, projector_dim: int = 2048, eps: float = 1e-4) -> None:
        super().__init__()
        layers = len(transformer.transformer_blocks)
        if not 1 <= encoder_depth <= layers:
            raise ConfigError(f"model.loss.end_to_end.encoder_depth must be in [1, {layers}] (the transformer's blocks), got {encoder_depth}")
        channels = transformer.config.in_channels
        hidden = transformer.config.num_attention_heads * transformer.config.attention_head_dim
        self.transformer = transformer
        self.batch_norm = nn.BatchNorm2d(channels, eps=eps, affine=False, track_running_stats=True)
        self.projector = nn.Sequential(
            nn.Linear(hidden, projector_dim), nn.SiLU(), nn.Linear(projector_dim, projector_dim), nn.SiLU(), nn.Linear(projector_dim, feature_dim)
        )
        self.encoder_depth = encoder_depth
        self._tokens: torch.Tensor | None = None
        self._stop_after = False
        transformer.transformer_blocks[encoder_depth - 1].register_forward_hook(self._keep_tokens)

    def _keep_tokens(self, module, inputs, output) -> None:
        self._tokens = output
        if self._stop_after:
            raise _Stop

    def normalise(self, latents: torch.Tensor) -> torch.Tensor:
        """(z - running mean) / sqrt(running var + eps) per channel."""
        bn = self.batch_norm
        return F.batch_norm(latents, bn.running_mean, bn.running_var, training=False, eps=bn.eps)

    def forward(self, latents: torch.Tensor, t: torch.Tensor, noise: torch.Tensor, *, align_only: bool = False):
        """(v prediction or None when `align_only`, v target, projected tokens (batch, tokens, feature_dim))
        for `latents` as the VAE made them: normalised here, then noised to time `t` with `noise`."""
        x0 = self.normalise(latents)
        tt = t.view(-1, 1, 1, 1).to(x0.dtype)
        noisy = (1 - tt) * x0 + tt * noise
        self._stop_after, self._tokens = align_only, None
        try:
            prediction = velocity(self.transformer, noisy, t)
        except _Stop:
            prediction = None
        finally:
            self._stop_after = False
        tokens, self._tokens = self._tokens, None
        return prediction, noise - x0, self.projector(tokens)

    def token_side(self, latent_side: int) -> int:
        return latent_side // self.transformer.config.patch_size
