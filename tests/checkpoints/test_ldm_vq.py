"""LDM's and taming's VQ checkpoints (attention inside resolution levels included) <-> diffusers' VQModel,
checked against LDM's forward pass written down from its code (tests.checkpoints.ldm_reference.py) on random
weights, in both directions. The configs are the released ones with `ch` 128 -> 32 (see ldm_reference)."""

from pathlib import Path

import pytest
import torch
import yaml
from diffusers import VQModel

from tests.checkpoints.ldm_reference import (
    SMALL,
    TAMING_IMAGENET_1024,
    VQ_F4,
    VQ_F8,
    VQ_F16,
    ldm_decode,
    ldm_encode,
    ldm_quantize,
    ldm_vq_shapes,
    random_ldm_vq,
)
from vaetrain.checkpoints import diffusers_to_ldm, ldm_to_diffusers, write_ldm_checkpoint
from vaetrain.checkpoints.ldm import ldm_config
from vaetrain.errors import ConfigError

CASES = {
    "ldm-vq-f4": VQ_F4,
    "ldm-vq-f8": VQ_F8,
    "ldm-vq-f16": VQ_F16,
    "taming-imagenet-1024": TAMING_IMAGENET_1024,
    # not a released model: attention at two levels, so that the decoder's level order is not symmetric
    "two-attending-levels": VQ_F8 | {"attn_resolutions": (128, 32)},
}


def attending(ddconfig: dict) -> list[bool]:
    """LDM's rule: level i (0 = full resolution) attends when resolution / 2^i is in attn_resolutions."""
    return [ddconfig["resolution"] // 2**i in ddconfig["attn_resolutions"] for i in range(len(ddconfig["ch_mult"]))]


def assert_same_outputs(model: VQModel, ldm: dict[str, torch.Tensor]) -> None:
    """The diffusers model and LDM's forward on the LDM tensors agree (float32): encoder, codes, decoder."""
    model = model.float().eval()
    ldm = {k: v.float() for k, v in ldm.items()}
    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1), dtype=torch.float32) * 2 - 1
    with torch.no_grad():
        latents = model.encode(images).latents
        expected_latents = ldm_encode(ldm, images)
        torch.testing.assert_close(latents, expected_latents, rtol=1e-4, atol=1e-5)
        indices, quantized = ldm_quantize(ldm, expected_latents)
        assert indices.unique().numel() > 1  # the codes actually differ across positions
        assert torch.equal(model.quantize(expected_latents)[2][2].reshape(indices.shape), indices)
        torch.testing.assert_close(model.decode(quantized, force_not_quantize=True).sample, ldm_decode(ldm, quantized), rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(model(images).sample, ldm_decode(ldm, quantized), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", CASES)
def test_an_ldm_vq_checkpoint_converts_to_a_vqmodel_with_ldms_outputs_and_back_to_identical_tensors(name):
    ddconfig = CASES[name] | SMALL
    ldm = random_ldm_vq(ddconfig)
    model = ldm_to_diffusers(ldm)
    assert type(model) is VQModel
    levels = attending(ddconfig)
    assert [kind.startswith("Attn") for kind in model.config.down_block_types] == levels
    assert [kind.startswith("Attn") for kind in model.config.up_block_types] == levels[::-1]  # diffusers' decoder counts from the latent
    assert (model.config.num_vq_embeddings, model.config.vq_embed_dim) == (ddconfig["n_embed"], ddconfig["embed_dim"])
    again = diffusers_to_ldm(model)
    assert again.keys() == ldm.keys()
    for key in ldm:
        assert torch.equal(again[key], ldm[key]), key
    assert_same_outputs(model, ldm)


@pytest.mark.parametrize("name", CASES)
def test_a_vqmodel_with_attention_inside_levels_converts_to_ldms_names_shapes_and_outputs(name):
    ddconfig = CASES[name] | SMALL
    levels = attending(ddconfig)
    model = VQModel(
        block_out_channels=[ddconfig["ch"] * m for m in ddconfig["ch_mult"]],
        down_block_types=[("AttnDownEncoderBlock2D" if a else "DownEncoderBlock2D") for a in levels],
        up_block_types=[("AttnUpDecoderBlock2D" if a else "UpDecoderBlock2D") for a in reversed(levels)],
        layers_per_block=ddconfig["num_res_blocks"],
        latent_channels=ddconfig["z_channels"],
        num_vq_embeddings=ddconfig["n_embed"],
        vq_embed_dim=ddconfig["embed_dim"],
        norm_num_groups=32,
    )
    generator = torch.Generator().manual_seed(2)
    with torch.no_grad():  # every tensor random: default norms (1, 0) would hide swapped names
        for name_, parameter in model.named_parameters():
            value = torch.randn(parameter.shape, generator=generator)
            fan_in = parameter[0].numel() if parameter.ndim > 1 else 0
            parameter.copy_(value / fan_in**0.5 if fan_in and "embedding" not in name_ else 0.1 * value + ("norm" in name_ and name_.endswith("weight")))
    ldm = diffusers_to_ldm(model)
    assert {k: tuple(v.shape) for k, v in ldm.items()} == ldm_vq_shapes(**ddconfig)  # the names and shapes LDM's code registers
    back = ldm_to_diffusers(ldm)
    for key, tensor in model.state_dict().items():
        assert torch.equal(back.state_dict()[key], tensor), key
    assert_same_outputs(model, ldm)


def test_a_converted_ldm_vq_model_has_ldms_scale_factor_one():
    """Every LDM config with a VQ first stage (configs/latent-diffusion/*-vq-*.yaml, cin256-v2.yaml,
    models/ldm/*/config.yaml) leaves LatentDiffusion's scale_factor at its default 1.0; 0.18215 is SD's KL VAE's."""
    assert ldm_config(random_ldm_vq(VQ_F4 | SMALL))["scaling_factor"] == 1.0
    assert ldm_to_diffusers(random_ldm_vq(VQ_F8 | SMALL)).config.scaling_factor == 1.0
    assert ldm_config(random_ldm_vq(VQ_F4 | SMALL), scaling_factor=0.5)["scaling_factor"] == 0.5


def test_a_vqmodel_attending_at_other_levels_in_encoder_and_decoder_has_no_ldm_equivalent():
    model = VQModel(
        block_out_channels=[32, 32],
        down_block_types=["DownEncoderBlock2D", "AttnDownEncoderBlock2D"],
        up_block_types=["UpDecoderBlock2D", "UpDecoderBlock2D"],
        norm_num_groups=32,
    )
    with pytest.raises(ConfigError, match="same resolutions"):
        diffusers_to_ldm(model)


CONFIGS = Path(__file__).parents[2] / "configs"


@pytest.mark.parametrize("preset,ddconfig", [("vq-f8.yaml", VQ_F8), ("vq-f16.yaml", VQ_F16), ("vq-f16-1024.yaml", TAMING_IMAGENET_1024)])
def test_the_vq_presets_build_the_released_architecture(preset, ddconfig):
    """Built from the preset (on the meta device: no memory), the model's LDM names and shapes are those of
    the released model's config, attention inside the levels included."""
    from vaetrain.models.autoencoder import AutoencoderConfig, build_autoencoder
    from vaetrain.models.quantizer import QuantizerConfig

    fields = yaml.safe_load((CONFIGS / preset).read_text())["model"]["autoencoder"]
    config = AutoencoderConfig(**(fields | {"quantizer": QuantizerConfig(**fields["quantizer"])}))
    with torch.device("meta"):
        model = build_autoencoder(config)
    assert {k: tuple(v.shape) for k, v in diffusers_to_ldm(model).items()} == ldm_vq_shapes(**ddconfig)


def test_convert_command_both_ways_for_an_attending_vq_checkpoint(tmp_path):
    from vaetrain.cli import main

    ldm = random_ldm_vq(VQ_F16 | SMALL)
    write_ldm_checkpoint(ldm | {"loss.discriminator.main.0.weight": torch.zeros(1)}, tmp_path / "vq-f16.ckpt")
    assert main(["convert", str(tmp_path / "vq-f16.ckpt"), str(tmp_path / "diffusers")]) == 0
    folder = VQModel.from_pretrained(tmp_path / "diffusers")
    assert folder.config.down_block_types[-1] == "AttnDownEncoderBlock2D" and folder.config.scaling_factor == 1.0
    assert main(["convert", str(tmp_path / "diffusers"), str(tmp_path / "back.safetensors"), "--prefix", "first_stage_model."]) == 0
    from safetensors.torch import load_file

    back = load_file(str(tmp_path / "back.safetensors"))
    assert back.keys() == {f"first_stage_model.{k}" for k in ldm}
    assert all(torch.equal(back[f"first_stage_model.{k}"], v) for k, v in ldm.items())
