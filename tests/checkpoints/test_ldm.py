"""LDM <-> diffusers conversion: our inverse renaming against diffusers' own converter."""

import pytest
import torch
from diffusers import AutoencoderKL

from vaetrain.checkpoints import diffusers_to_ldm, ldm_to_diffusers, load_autoencoder, read_ldm_state_dict, write_ldm_checkpoint
from vaetrain.errors import ConfigError

LDM_LIKE = dict(
    block_out_channels=(32, 64),
    down_block_types=("DownEncoderBlock2D",) * 2,
    up_block_types=("UpDecoderBlock2D",) * 2,
    layers_per_block=2,
    latent_channels=4,
    norm_num_groups=32,
)


def randomised(model: AutoencoderKL) -> AutoencoderKL:
    """Every tensor random (default init leaves norms at 1/0, which would hide swapped names)."""
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.1)
    return model.eval()


@pytest.fixture
def model() -> AutoencoderKL:
    return randomised(AutoencoderKL(**LDM_LIKE))


def test_ldm_names_and_shapes_are_the_original_ones(model):
    ldm = diffusers_to_ldm(model)
    # Names as in SD's VAE: decoder levels counted bottom-up, attention as 1x1 convolutions.
    assert ldm["encoder.mid.attn_1.q.weight"].shape == (64, 64, 1, 1)
    assert ldm["decoder.mid.attn_1.proj_out.weight"].shape == (64, 64, 1, 1)
    assert torch.equal(ldm["decoder.up.1.block.0.conv1.weight"], model.decoder.up_blocks[0].resnets[0].conv1.weight)
    assert torch.equal(ldm["decoder.up.1.upsample.conv.weight"], model.decoder.up_blocks[0].upsamplers[0].conv.weight)
    assert torch.equal(ldm["encoder.down.1.block.0.nin_shortcut.weight"], model.encoder.down_blocks[1].resnets[0].conv_shortcut.weight)
    assert torch.equal(ldm["encoder.down.0.downsample.conv.weight"], model.encoder.down_blocks[0].downsamplers[0].conv.weight)
    assert torch.equal(ldm["encoder.norm_out.weight"], model.encoder.conv_norm_out.weight)
    assert torch.equal(ldm["decoder.mid.block_2.norm1.bias"], model.decoder.mid_block.resnets[1].norm1.bias)
    assert len(ldm) == len(model.state_dict())


def test_diffusers_converter_maps_our_ldm_weights_back_to_identical_tensors(model):
    back = ldm_to_diffusers(diffusers_to_ldm(model))
    original = model.state_dict()
    assert list(back.config.block_out_channels) == list(LDM_LIKE["block_out_channels"])
    assert back.config.layers_per_block == 2
    for key, tensor in back.state_dict().items():
        assert torch.equal(tensor, original[key]), key


@pytest.mark.parametrize("suffix,prefix", [(".safetensors", "first_stage_model."), (".ckpt", ""), (".ckpt", "first_stage_model.")])
def test_ldm_file_to_diffusers_to_ldm_returns_identical_tensors(tmp_path, model, suffix, prefix):
    ldm = diffusers_to_ldm(model)
    # A full SD checkpoint also holds the UNet: only the VAE's tensors must be taken.
    unet = {"model.diffusion_model.input_blocks.0.0.weight": torch.ones(2)} if prefix else {}
    path = write_ldm_checkpoint(ldm, tmp_path / f"vae{suffix}", prefix=prefix)
    if unet:
        from safetensors.torch import load_file, save_file

        tensors = load_file(str(path)) if suffix == ".safetensors" else torch.load(path, weights_only=True)["state_dict"]
        tensors |= unet
        save_file(tensors, str(path)) if suffix == ".safetensors" else torch.save({"state_dict": tensors}, path)

    converted = load_autoencoder(path)
    again = diffusers_to_ldm(converted)
    assert again.keys() == ldm.keys()
    for key in ldm:
        assert torch.equal(again[key], ldm[key]), key
    images = torch.rand(1, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        assert torch.equal(converted(images, sample_posterior=False).sample, model(images, sample_posterior=False).sample)


def test_models_without_an_ldm_equivalent_are_refused():
    with pytest.raises(ConfigError, match="32 groups"):
        diffusers_to_ldm(AutoencoderKL(**(LDM_LIKE | {"norm_num_groups": 8})))


def test_a_file_without_vae_weights_is_named(tmp_path):
    path = tmp_path / "unet.safetensors"
    from safetensors.torch import save_file

    save_file({"model.diffusion_model.x": torch.ones(1)}, str(path))
    with pytest.raises(ConfigError, match="unet.safetensors"):
        read_ldm_state_dict(path)


def test_convert_command_both_ways(tmp_path, model):
    from vaetrain.cli import main

    model.save_pretrained(tmp_path / "diffusers")
    assert main(["convert", str(tmp_path / "diffusers"), str(tmp_path / "vae.safetensors")]) == 0
    assert main(["convert", str(tmp_path / "vae.safetensors"), str(tmp_path / "back")]) == 0
    back = AutoencoderKL.from_pretrained(tmp_path / "back")
    for key, tensor in back.state_dict().items():
        assert torch.equal(tensor, model.state_dict()[key]), key
    assert main(["convert", str(tmp_path / "missing.ckpt"), str(tmp_path / "x")]) == 2


def test_an_ldm_vq_checkpoint_converts_to_vqmodel_and_back_with_equal_tensors(tmp_path):
    """LDM's / taming's VQModel layout (encoder, decoder, quant_conv, post_quant_conv, quantize.embedding),
    as a training run saves it (with the loss's tensors beside it): to a diffusers VQModel with the same
    outputs, and back to the same tensors under the same names."""
    from diffusers import VQModel

    vq = randomised(VQModel(**LDM_LIKE, num_vq_embeddings=64, vq_embed_dim=3))
    ldm = diffusers_to_ldm(vq)
    assert ldm["quantize.embedding.weight"].shape == (64, 3) and ldm["quant_conv.weight"].shape == (3, 4, 1, 1)
    assert "encoder.down.0.block.0.conv1.weight" in ldm and "decoder.up.1.block.0.conv1.weight" in ldm
    stored = ldm | {"loss.discriminator.main.0.weight": torch.zeros(1)}  # what a taming run's checkpoint also holds
    path = write_ldm_checkpoint(stored, tmp_path / "vq-f4.ckpt")
    back = load_autoencoder(path)
    assert type(back) is VQModel and back.config.num_vq_embeddings == 64 and back.config.vq_embed_dim == 3
    images = torch.rand(1, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        assert torch.equal(back(images).sample, vq(images).sample)
    again = diffusers_to_ldm(back)
    assert again.keys() == ldm.keys() and all(torch.equal(again[k], ldm[k]) for k in ldm)


def test_an_incomplete_attention_inside_a_level_is_refused_in_one_line():
    """Attention inside levels converts (tests/checkpoints/test_ldm_vq.py); tensors that make no whole attention
    block are refused, not dropped."""
    ldm = diffusers_to_ldm(randomised(AutoencoderKL(**LDM_LIKE)))
    with pytest.raises(ConfigError, match="do not fit AutoencoderKL"):
        ldm_to_diffusers(ldm | {"encoder.down.1.attn.0.q.weight": torch.zeros(64, 64, 1, 1)})
