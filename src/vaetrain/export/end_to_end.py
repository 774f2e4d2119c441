"""What an end-to-end tuned run (`model.loss.end_to_end`, REPA-E) exports beyond the autoencoder: the latent
normalisation its SiT's BatchNorm learned, and the SiT itself as a side folder.

REPA-E's `save_vae_weights.py` takes the latent statistics from the EMA SiT's BatchNorm
(`ckpt["ema"]["bn.running_mean"]`, `["bn.running_var"]`: latents_bias = mean, latents_scale =
running_var^-1/2); so does this (`diffusion_ema.module.batch_norm.*`), written in the convention the export
asks for (`models.latent_space.convention_fields`): per channel as `latents_mean`/`latents_std`, or over
all channels as `shift_factor` (the channels' mean) and `scaling_factor` (1 / the pooled standard deviation).
The side folder `<export>-sit/` is the EMA SiT's transformer as a diffusers `DiTTransformer2DModel` folder
(its own config.json), plus `end_to_end.json`: the input normalisation it expects, its REPA settings and
the projector's weights file.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from vaetrain.evaluation.latents import LatentStatistics
from vaetrain.models.diffusion_transformer import build_transformer

PREFIX = "diffusion_ema.module."
SIDE_SUFFIX = "-sit"


def end_to_end_settings(settings: dict) -> dict | None:
    """The run's `model.loss.end_to_end` block when it was on, else None."""
    block = (settings.get("loss") or {}).get("end_to_end") or {}
    return block if block.get("enabled") else None


def learned_statistics(state: dict[str, torch.Tensor]) -> LatentStatistics | None:
    """The EMA SiT's BatchNorm statistics as `LatentStatistics` (None: no SiT in `state`, or never updated)."""
    mean, variance = state.get(PREFIX + "batch_norm.running_mean"), state.get(PREFIX + "batch_norm.running_var")
    tracked = state.get("diffusion.batch_norm.num_batches_tracked")
    if mean is None or variance is None or (tracked is not None and int(tracked) == 0):
        return None
    mean, variance = mean.double(), variance.double()
    overall = mean.mean()
    pooled = (variance + (mean - overall).square()).mean().sqrt()
    return LatentStatistics(float(overall), float(pooled), mean.tolist(), variance.sqrt().tolist(), count=0)


def save_sit(state: dict[str, torch.Tensor], settings: dict, latent_channels: int, vae_dir: Path) -> Path | None:
    """Writes `<vae_dir>-sit/` from the run's state and settings (None when the run had no SiT)."""
    block = end_to_end_settings(settings)
    if block is None or not any(key.startswith(PREFIX) for key in state):
        return None
    size = block["size"] if isinstance(block["size"], str) else tuple(block["size"])
    transformer = build_transformer(size, latent_channels, 32, block["patch_size"])
    weights = {key[len(PREFIX + "transformer.") :]: value for key, value in state.items() if key.startswith(PREFIX + "transformer.")}
    transformer.load_state_dict(weights)
    out = vae_dir.parent / f"{vae_dir.name}{SIDE_SUFFIX}"
    transformer.save_pretrained(out, safe_serialization=True)
    projector = {key[len(PREFIX + "projector.") :]: value.contiguous() for key, value in state.items() if key.startswith(PREFIX + "projector.")}
    save_file(projector, str(out / "projector.safetensors"))
    norm = PREFIX + "batch_norm."
    facts = {
        "what": "REPA-E's SiT trained end to end with the VAE in the folder beside this one (EMA weights, unconditional: class label 0)",
        "input": "(z - latents_mean) / sqrt(latents_var + 1e-4) per channel, z the VAE's latent; then x_t = (1 - t) x + t noise, the model "
        "predicts noise - x at timestep t * 1000",
        "latents_mean": state[norm + "running_mean"].tolist(),
        "latents_var": state[norm + "running_var"].tolist(),
        "representation_encoder": block["encoder"],
        "encoder_depth": block["encoder_depth"],
        "projector": "projector.safetensors: Linear-SiLU-Linear-SiLU-Linear on the tokens after block encoder_depth",
    }
    (out / "end_to_end.json").write_text(json.dumps(facts, indent=2) + "\n")
    return out


def card_line(settings: dict) -> str | None:
    """The model card's row: that it was end-to-end tuned, and with what."""
    block = end_to_end_settings(settings)
    if block is None:
        return None
    size = block["size"] if isinstance(block["size"], str) else "x".join(str(v) for v in block["size"])
    return (
        f"end-to-end tuned (REPA-E) with a SiT ({size}, patch {block['patch_size']}) trained on its latents in the same steps, its block-"
        f"{block['encoder_depth']} tokens aligned to `{block['encoder']}` (weight {block['vae_alignment_weight']} into the VAE, "
        f"{block['alignment_weight']} into the SiT); latent normalisation from the SiT's BatchNorm; the SiT is in the `{SIDE_SUFFIX}` folder beside this one"
    )
