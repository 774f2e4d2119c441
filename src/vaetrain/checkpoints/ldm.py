"""The original LDM / Stable Diffusion VAE checkpoint format <-> diffusers' AutoencoderKL, and LDM's and
taming-transformers' VQ models (CompVis `VQModel` / `VQModelInterface`: the same encoder and decoder names
plus `quantize.embedding.weight`) <-> diffusers' VQModel.

LDM -> diffusers is diffusers' own converter (`convert_ldm_vae_checkpoint`, the code behind
`from_single_file`); the architecture is read off the tensor shapes. diffusers ships no converter back,
so `diffusers_to_ldm` writes the inverse renaming; the tests check that diffusers' converter maps its
output back to the identical state dict, which pins the two to each other.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
from diffusers import AutoencoderKL, VQModel
from diffusers.loaders.single_file_utils import DIFFUSERS_TO_LDM_MAPPING, LDM_VAE_DEFAULT_SCALING_FACTOR, LDM_VAE_KEYS, convert_ldm_vae_checkpoint
from safetensors.torch import load_file, save_file

from vaetrain.errors import ConfigError

LDM_GROUP_NORM_GROUPS = 32  # LDM's `Normalize` is hard-wired to 32 groups
CODEBOOK_KEY = "quantize.embedding.weight"  # the same name in LDM's VQModel and diffusers'
_ATTENTION_RENAMES = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}


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
    """AutoencoderKL (or, with a codebook, VQModel) config fields read off the tensor shapes of an LDM state dict."""
    if any(".attn." in key for key in state_dict if key.startswith(("encoder.down.", "decoder.up."))):
        raise ConfigError("this LDM model attends inside its resolution levels (attn_resolutions); only mid-block attention is converted")
    levels = sorted({int(m.group(1)) for k in state_dict if (m := re.match(r"encoder\.down\.(\d+)\.", k))})
    widths = [state_dict[f"encoder.down.{i}.block.0.conv2.weight"].shape[0] for i in levels]
    layers = len({m.group(1) for k in state_dict if (m := re.match(r"encoder\.down\.0\.block\.(\d+)\.", k))})
    return {
        "in_channels": state_dict["encoder.conv_in.weight"].shape[1],
        "out_channels": state_dict["decoder.conv_out.weight"].shape[0],
        "down_block_types": ["DownEncoderBlock2D"] * len(widths),
        "up_block_types": ["UpDecoderBlock2D"] * len(widths),
        "block_out_channels": widths,
        "layers_per_block": layers,
        "latent_channels": state_dict["decoder.conv_in.weight"].shape[1],
        "norm_num_groups": LDM_GROUP_NORM_GROUPS,
        "sample_size": sample_size,
        "scaling_factor": LDM_VAE_DEFAULT_SCALING_FACTOR if scaling_factor is None else scaling_factor,
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
    converted = convert_ldm_vae_checkpoint({k: v for k, v in state_dict.items() if k != CODEBOOK_KEY}, dict(model.config))
    if vq:
        converted[CODEBOOK_KEY] = state_dict[CODEBOOK_KEY]
    try:
        model.load_state_dict(converted, strict=True)
    except RuntimeError as error:
        raise ConfigError(f"LDM weights do not fit AutoencoderKL{tuple(config['block_out_channels'])}: {error}") from error
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
    if any(kind.startswith("Attn") for kind in (*config.down_block_types, *config.up_block_types)) or config.get("norm_type", "group") != "group":
        raise ConfigError("only plain resolution levels (mid-block attention, group norm) have LDM names here")
    top_level = DIFFUSERS_TO_LDM_MAPPING["vae"]
    levels = len(config.block_out_channels)
    ldm: dict[str, torch.Tensor] = {}
    for key, tensor in model.state_dict().items():
        tensor = tensor.detach().clone()
        if key in top_level or key == CODEBOOK_KEY:
            ldm[top_level.get(key, key)] = tensor
            continue
        name = _ldm_name(key, levels)
        if ".attn_1." in name and name.endswith(("q.weight", "k.weight", "v.weight", "proj_out.weight")):
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
