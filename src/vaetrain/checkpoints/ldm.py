"""The original LDM / Stable Diffusion VAE checkpoint format <-> diffusers' AutoencoderKL, and LDM's and
taming-transformers' VQ models (CompVis `VQModel` / `VQModelInterface`: the same encoder and decoder names
plus `quantize.embedding.weight`) <-> diffusers' VQModel.

LDM -> diffusers is diffusers' own converter (`convert_ldm_vae_checkpoint`, the code behind
`from_single_file`); the architecture is read off the tensor shapes. Attention inside resolution levels
(LDM's `attn_resolutions`: `down.i.attn.j` / `up.i.attn.j`, as in LDM's VQ-f8/f16 and taming's VQGANs),
which that converter does not place, becomes diffusers' `AttnDownEncoderBlock2D` / `AttnUpDecoderBlock2D`,
renamed by diffusers' own attention renaming. diffusers ships no converter back, so `diffusers_to_ldm`
writes the inverse renaming; the tests check it against diffusers' converter and both against a forward
pass written after LDM's code.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
from diffusers import AutoencoderKL, VQModel
from diffusers.loaders.single_file_utils import (
    DIFFUSERS_TO_LDM_MAPPING,
    LDM_VAE_DEFAULT_SCALING_FACTOR,
    LDM_VAE_KEYS,
    convert_ldm_vae_checkpoint,
    update_vae_attentions_ldm_to_diffusers,
)
from safetensors.torch import load_file, save_file

from vaetrain.errors import ConfigError

LDM_GROUP_NORM_GROUPS = 32  # LDM's `Normalize` is hard-wired to 32 groups
CODEBOOK_KEY = "quantize.embedding.weight"  # the same name in LDM's VQModel and diffusers'
LDM_VQ_SCALE_FACTOR = 1.0  # LatentDiffusion's default: no LDM config with a VQ first stage sets scale_factor
_ATTENTION_RENAMES = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}
_LEVEL_ATTENTION = re.compile(r"(encoder\.down|decoder\.up)\.(\d+)\.attn\.(\d+)\.")  # LDM's attention inside a level
_BLOCK_TYPES = {"down": ("DownEncoderBlock2D", "AttnDownEncoderBlock2D"), "up": ("UpDecoderBlock2D", "AttnUpDecoderBlock2D")}


def read_ldm_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The VAE tensors of an LDM/SD checkpoint (`.safetensors` or `.ckpt`; a full SD checkpoint or a VAE
    alone, with or without the `first_stage_model.` prefix), keys without the prefix."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"checkpoint '{path}' does not exist")
    if path.suffix == ".safetensors":
        state_dict = load_file(str(path))
    else:
        try:
            loaded = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:  # noqa: BLE001 - unpickling errors come in many types
            raise ConfigError(f"'{path}' cannot be loaded weights-only ({type(error).__name__}); convert it to .safetensors first") from error
        state_dict = loaded.get("state_dict", loaded) if isinstance(loaded, dict) else {}
    for prefix in LDM_VAE_KEYS:
        if any(key.startswith(prefix) for key in state_dict):
            state_dict = {k[len(prefix) :]: v for k, v in state_dict.items() if k.startswith(prefix)}
            break
    if "encoder.conv_in.weight" not in state_dict or "decoder.conv_out.weight" not in state_dict:
        raise ConfigError(f"'{path}' holds no LDM VAE weights (no encoder.conv_in / decoder.conv_out tensors)")
    return state_dict


def ldm_config(state_dict: dict[str, torch.Tensor], *, scaling_factor: float | None = None, sample_size: int = 512) -> dict:
    """AutoencoderKL (or, with a codebook, VQModel) config fields read off the tensor shapes of an LDM state dict.
    A level holding `attn` tensors (LDM's `attn_resolutions`) becomes an Attn*Block2D. `scaling_factor`
    defaults to SD's 0.18215 for a KL model and to LDM's 1.0 for a VQ model (`LDM_VQ_SCALE_FACTOR`)."""
    levels = sorted({int(m.group(1)) for k in state_dict if (m := re.match(r"encoder\.down\.(\d+)\.", k))})
    widths = [state_dict[f"encoder.down.{i}.block.0.conv2.weight"].shape[0] for i in levels]
    layers = len({m.group(1) for k in state_dict if (m := re.match(r"encoder\.down\.0\.block\.(\d+)\.", k))})
    attending = {(m[1], int(m[2])) for k in state_dict if (m := _LEVEL_ATTENTION.match(k))}
    if scaling_factor is None:
        scaling_factor = LDM_VQ_SCALE_FACTOR if CODEBOOK_KEY in state_dict else LDM_VAE_DEFAULT_SCALING_FACTOR
    return {
        "in_channels": state_dict["encoder.conv_in.weight"].shape[1],
        "out_channels": state_dict["decoder.conv_out.weight"].shape[0],
        "down_block_types": [_BLOCK_TYPES["down"][("encoder.down", i) in attending] for i in levels],
        # diffusers counts the decoder's levels top-down from the latent, LDM bottom-up from the image
        "up_block_types": [_BLOCK_TYPES["up"][("decoder.up", len(levels) - 1 - i) in attending] for i in levels],
        "block_out_channels": widths,
        "layers_per_block": layers,
        "latent_channels": state_dict["decoder.conv_in.weight"].shape[1],
        "norm_num_groups": LDM_GROUP_NORM_GROUPS,
        "sample_size": sample_size,
        "scaling_factor": scaling_factor,
    } | _vq_fields(state_dict)


def _vq_fields(state_dict: dict[str, torch.Tensor]) -> dict:
    """A VQ model's codebook (LDM's `n_embed` x `embed_dim`) as VQModel's fields; nothing for a KL model."""
    codebook = state_dict.get(CODEBOOK_KEY)
    if codebook is None:
        return {}
    return {"num_vq_embeddings": codebook.shape[0], "vq_embed_dim": codebook.shape[1], "_class_name": "VQModel"}


def ldm_to_diffusers(state_dict: dict[str, torch.Tensor], config: dict | None = None) -> AutoencoderKL | VQModel:
    """An AutoencoderKL (a VQModel for a VQ model) holding the LDM weights (strict: every tensor must find its place)."""
    config = config or ldm_config(state_dict)
    vq = config.get("_class_name") == "VQModel"
    model = (VQModel if vq else AutoencoderKL).from_config({k: v for k, v in config.items() if k != "_class_name"})
    plain = {k: v for k, v in state_dict.items() if k != CODEBOOK_KEY and not _LEVEL_ATTENTION.match(k)}
    converted = convert_ldm_vae_checkpoint(plain, dict(model.config))
    levels = len(config["block_out_channels"])
    for key in state_dict:  # diffusers' converter leaves attention inside levels out: renamed as its mid-block attention
        if m := _LEVEL_ATTENTION.match(key):
            part, level, index = m[1], int(m[2]), m[3]
            block = f"down_blocks.{level}" if part == "encoder.down" else f"up_blocks.{levels - 1 - level}"
            old, new = f"{part.split('.')[1]}.{level}.attn.{index}", f"{block}.attentions.{index}"
            update_vae_attentions_ldm_to_diffusers([key], converted, state_dict, mapping={"old": old, "new": new})
    if vq:
        converted[CODEBOOK_KEY] = state_dict[CODEBOOK_KEY]
    try:
        model.load_state_dict(converted, strict=True)
    except RuntimeError as error:
        raise ConfigError(f"LDM weights do not fit {type(model).__name__}{tuple(config['block_out_channels'])}: {error}") from error
    return model.eval()


def diffusers_to_ldm(model: AutoencoderKL | VQModel) -> dict[str, torch.Tensor]:
    """The model's weights under LDM's names and shapes (attention projections as 1x1 convolutions)."""
    if not isinstance(model, AutoencoderKL | VQModel):
        raise ConfigError(f"the LDM format holds AutoencoderKL and VQModel weights only, not {type(model).__name__}")
    config = model.config
    if config.norm_num_groups != LDM_GROUP_NORM_GROUPS:
        raise ConfigError(
            f"norm_num_groups={config.norm_num_groups}: the LDM code always uses {LDM_GROUP_NORM_GROUPS} groups, so this model has no LDM equivalent"
        )
    if not (config.get("use_quant_conv", True) and config.get("use_post_quant_conv", True) and config.mid_block_add_attention):
        raise ConfigError("LDM VAEs always have quant_conv, post_quant_conv and mid-block attention; this model lacks one")
    down, up = list(config.down_block_types), list(config.up_block_types)
    if not set(down) <= set(_BLOCK_TYPES["down"]) or not set(up) <= set(_BLOCK_TYPES["up"]) or config.get("norm_type", "group") != "group":
        raise ConfigError(f"only {'/'.join(_BLOCK_TYPES['down'] + _BLOCK_TYPES['up'])} levels with group norm have LDM names, not {down} / {up}")
    levels = len(config.block_out_channels)
    if [kind.startswith("Attn") for kind in down] != [kind.startswith("Attn") for kind in reversed(up)]:
        raise ConfigError(f"the encoder attends at other levels than the decoder ({down} / {up}): LDM's attn_resolutions places both at the same resolutions")
    top_level = DIFFUSERS_TO_LDM_MAPPING["vae"]
    ldm: dict[str, torch.Tensor] = {}
    for key, tensor in model.state_dict().items():
        tensor = tensor.detach().clone()
        if key in top_level or key == CODEBOOK_KEY:
            ldm[top_level.get(key, key)] = tensor
            continue
        name = _ldm_name(key, levels)
        if re.search(r"\.(attn_1|attn\.\d+)\.(q|k|v|proj_out)\.weight$", name):
            tensor = tensor[:, :, None, None]
        ldm[name] = tensor
    return ldm


def _ldm_name(key: str, levels: int) -> str:
    part, rest = key.split(".", 1)
    if m := re.match(r"down_blocks\.(\d+)\.resnets\.(\d+)\.(.*)", rest):
        rest = f"down.{m[1]}.block.{m[2]}.{m[3]}"
    elif m := re.match(r"down_blocks\.(\d+)\.downsamplers\.0\.(.*)", rest):
        rest = f"down.{m[1]}.downsample.{m[2]}"
    elif m := re.match(r"up_blocks\.(\d+)\.resnets\.(\d+)\.(.*)", rest):
        rest = f"up.{levels - 1 - int(m[1])}.block.{m[2]}.{m[3]}"
    elif m := re.match(r"up_blocks\.(\d+)\.upsamplers\.0\.(.*)", rest):
        rest = f"up.{levels - 1 - int(m[1])}.upsample.{m[2]}"
    elif m := re.match(r"down_blocks\.(\d+)\.attentions\.(\d+)\.(.*)\.(weight|bias)", rest):
        rest = f"down.{m[1]}.attn.{m[2]}.{_ATTENTION_RENAMES.get(m[3], m[3])}.{m[4]}"
    elif m := re.match(r"up_blocks\.(\d+)\.attentions\.(\d+)\.(.*)\.(weight|bias)", rest):
        rest = f"up.{levels - 1 - int(m[1])}.attn.{m[2]}.{_ATTENTION_RENAMES.get(m[3], m[3])}.{m[4]}"
    elif m := re.match(r"mid_block\.resnets\.(\d+)\.(.*)", rest):
        rest = f"mid.block_{int(m[1]) + 1}.{m[2]}"
    elif m := re.match(r"mid_block\.attentions\.0\.(.*)\.(weight|bias)", rest):
        rest = f"mid.attn_1.{_ATTENTION_RENAMES.get(m[1], m[1])}.{m[2]}"
    else:
        raise ConfigError(f"no LDM name for diffusers key '{key}'")
    return f"{part}.{rest.replace('conv_shortcut', 'nin_shortcut')}"


def write_ldm_checkpoint(state_dict: dict[str, torch.Tensor], path: str | Path, *, prefix: str = "") -> Path:
    """`.safetensors` (flat) or `.ckpt` (`{"state_dict": ...}`, as LDM saves), written atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {f"{prefix}{k}": v.contiguous() for k, v in state_dict.items()}
    partial = path.with_name(f".{path.name}.partial")
    if path.suffix == ".safetensors":
        save_file(tensors, str(partial))
    elif path.suffix in (".ckpt", ".pt", ".pth"):
        torch.save({"state_dict": tensors}, partial)
    else:
        raise ConfigError(f"'{path}': an LDM checkpoint ends in .safetensors or .ckpt")
    partial.replace(path)
    return path
