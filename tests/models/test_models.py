import pytest
import torch

from tests.conftest import tiny_autoencoder_config
from vaetrain.errors import ConfigError
from vaetrain.models import AutoencoderConfig, DiscriminatorConfig, PatchDiscriminator, build_autoencoder, build_ema, downsampling_factor


def test_sd_preset_defaults_build_sd_architecture():
    config = AutoencoderConfig()
    assert config.block_out_channels == [128, 256, 512, 512] and config.layers_per_block == 2
    assert config.latent_channels == 4


def test_save_reload_gives_the_same_outputs(tmp_path):
    torch.manual_seed(0)
    model = build_autoencoder(tiny_autoencoder_config()).eval()
    model.save_pretrained(tmp_path / "vae")
    reloaded = build_autoencoder(AutoencoderConfig(pretrained=str(tmp_path / "vae"))).eval()
    images = torch.rand(1, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        assert torch.equal(model(images).sample, reloaded(images).sample)
    assert downsampling_factor(reloaded) == 2


def test_missing_pretrained_path_fails_naming_it(tmp_path):
    with pytest.raises(ConfigError, match="nothing-here"):
        build_autoencoder(AutoencoderConfig(pretrained=str(tmp_path / "nothing-here")))


def test_decoder_only_and_checkpointing_switches():
    model = build_autoencoder(tiny_autoencoder_config(train_encoder=False, gradient_checkpointing=True))
    assert not any(p.requires_grad for p in model.encoder.parameters())
    assert all(p.requires_grad for p in model.decoder.parameters())
    assert model.decoder.gradient_checkpointing


@pytest.mark.parametrize("norm", ["batch", "group", "spectral", "spectral_group"])
def test_discriminator_norms_give_patch_logits(norm):
    discriminator = PatchDiscriminator(DiscriminatorConfig(base_channels=8, num_layers=3, norm=norm))
    logits = discriminator(torch.randn(2, 3, 64, 64))
    assert logits.shape == (2, 1, 6, 6)
    has_batch_norm = any(isinstance(m, torch.nn.BatchNorm2d) for m in discriminator.modules())
    assert has_batch_norm == (norm == "batch")
    spectral = any(hasattr(m, "parametrizations") for m in discriminator.modules())
    assert spectral == norm.startswith("spectral")


def test_ema_is_a_frozen_fp32_copy():
    model = build_autoencoder(tiny_autoencoder_config())
    ema = build_ema(model, 0.9)
    assert not any(p.requires_grad for p in ema.parameters())
    assert all(p.dtype == torch.float32 for p in ema.parameters())
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    ema.update_parameters(model)  # first update copies
    assert all(torch.equal(a, b) for a, b in zip(ema.module.parameters(), model.parameters()))


def test_batch_norm_discriminator_is_synchronised_only_under_data_parallelism():
    from vaetrain.models.discriminator import synchronise_batch_norm

    def count(module, kind):
        return sum(type(m) is kind for m in module.modules())

    batch = PatchDiscriminator(DiscriminatorConfig(base_channels=8, num_layers=2, norm="batch"))
    assert count(synchronise_batch_norm(batch, 1, "cuda"), torch.nn.BatchNorm2d) == 2  # one process: plain
    synced = synchronise_batch_norm(batch, 2, "cuda")
    assert count(synced, torch.nn.SyncBatchNorm) == 2 and count(synced, torch.nn.BatchNorm2d) == 0
    per_sample = PatchDiscriminator(DiscriminatorConfig(base_channels=8, num_layers=2, norm="spectral_group"))
    assert synchronise_batch_norm(per_sample, 8, "cuda") is per_sample and count(per_sample, torch.nn.SyncBatchNorm) == 0
    with pytest.raises(ConfigError, match="model.discriminator.norm=batch with several processes needs SyncBatchNorm"):
        synchronise_batch_norm(PatchDiscriminator(DiscriminatorConfig(norm="batch")), 2, "cpu")


def test_settings_of_the_other_discriminator_are_refused():
    from vaetrain.models.discriminator import DiscriminatorConfig, build_discriminator

    with pytest.raises(
        ConfigError, match="model.discriminator.num_layers, model.discriminator.norm: PatchGAN settings, which do not apply with model.discriminator.kind=vgg16"
    ):
        build_discriminator(DiscriminatorConfig(kind="vgg16", vgg_backbone="random", num_layers=2, norm="batch"))
    with pytest.raises(ConfigError, match="vgg_backbone=random applies to kind=vgg16 only"):
        build_discriminator(DiscriminatorConfig(vgg_backbone="random"))


def test_architecture_fields_beside_a_pretrained_model_must_agree_with_it(tmp_path):
    """A pretrained model keeps its architecture: a field that contradicts it is refused in one line, the
    same values (a base preset under a phase preset) pass."""
    from dataclasses import replace

    from tests.conftest import tiny_autoencoder_config
    from vaetrain.models import build_autoencoder

    config = tiny_autoencoder_config()
    build_autoencoder(config).save_pretrained(tmp_path / "vae")
    same = replace(config, pretrained=str(tmp_path / "vae"))
    assert build_autoencoder(same).config.latent_channels == 4
    with pytest.raises(
        ConfigError, match=r"model.autoencoder: layers_per_block=3 \(the model has 1\); latent_channels=8 \(the model has 4\) differ from the pretrained"
    ):
        build_autoencoder(replace(same, latent_channels=8, layers_per_block=3))
    with pytest.raises(ConfigError, match=r"family=dc \(the model is AutoencoderKL\)"):
        build_autoencoder(replace(same, family="dc", norm_num_groups=32))
    with pytest.raises(ConfigError, match=r"down_block_types=\['DownEncoderBlock2D'\] \(the model has"):
        build_autoencoder(replace(same, architecture={"down_block_types": ["DownEncoderBlock2D"]}))
