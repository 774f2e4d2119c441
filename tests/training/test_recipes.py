"""Each recipe setting trains (finite, every network changes) and resumes bit for bit; the optimizer rules;
the fixed posterior's sampling and export; the VGG16 discriminator."""

from pathlib import Path

import lightning as L
import pytest
import torch
from diffusers import AutoencoderKL
from lightning.pytorch.callbacks import ModelCheckpoint

from tests.conftest import tiny_module, tiny_trainer
from vaetrain.data import SampleDataModule
from vaetrain.losses import PooledReconstruction
from vaetrain.losses.alignment import AlignmentConfig
from vaetrain.losses.equivariance import EquivarianceConfig
from vaetrain.models import DiscriminatorConfig, VGGDiscriminator
from vaetrain.models.autoencoder import autoencoder_from_state
from vaetrain.training.optim import OptimizerConfig

SETTINGS = {
    "gradnorm": dict(loss={"balance": "gradnorm", "reconstruction_weight": 0.001, "disc_weight": 1.0, "disc_start_step": 0}),
    "fixed_posterior": dict(autoencoder={"posterior": "fixed", "posterior_std": 0.1, "latent_clamp": 8.0}, loss={"kl_weight": 0.1}),
    "pooled_masked": dict(loss={"pooled_reconstruction": PooledReconstruction(weight=0.5, factor=2, mask=True)}),
    "ms_ssim_l1_focal_frequency": dict(loss={"reconstruction": "ms_ssim_l1", "focal_frequency_weight": 1.0, "perceptual_weight": 0.0}),
    "thresholded_lecam_r1": dict(loss={"gan_loss": "thresholded_hinge", "lecam_weight": 0.1, "r1_weight": 1.0, "r1_every": 2, "disc_start_step": 1}),
    "vgg16_thresholded_lecam_r1": dict(
        discriminator={"kind": "vgg16", "vgg_backbone": "random"},
        loss={"gan_loss": "thresholded_hinge", "lecam_weight": 0.1, "r1_weight": 1.0, "r1_every": 2, "disc_start_step": 1},
    ),
    "equivariance_noise": dict(loss={"equivariance": EquivarianceConfig(probability=0.6, low_resolution_probability=0.5), "latent_noise": 0.3}),
    "alignment": dict(loss={"alignment": AlignmentConfig(weight=0.1, encoder="random-small")}),
    "adamw_width_lr_cosine": dict(
        optimizer=OptimizerConfig(
            name="adamw", lr=0.1, betas=(0.9, 0.95), weight_decay=1e-3, lr_scale="width", conv_in_lr=1e-4, scheduler="cosine", warmup_steps=2
        ),
        discriminator_optimizer=OptimizerConfig(name="adamw", lr=1e-3, betas=(0.9, 0.95), weight_decay=1e-3),
        training={"schedule_steps": 6},  # the interrupted half stops at max_steps 3: the horizon must not follow it
    ),
}


def _data(folder: Path) -> SampleDataModule:
    return SampleDataModule(path=str(folder), resolution=32, batch_size=2, val_size=2, num_workers=0, seed=0)


def _run(root: Path, folder: Path, settings: dict, max_steps: int, ckpt_path: str | None = None):
    L.seed_everything(0)
    module = tiny_module(**({"loss": {"disc_start_step": 1}} | settings))
    checkpoint = ModelCheckpoint(dirpath=root, save_last=True, every_n_train_steps=3)
    trainer = tiny_trainer(root, max_steps=max_steps, callbacks=[checkpoint], enable_checkpointing=True)
    trainer.fit(module, _data(folder), ckpt_path=ckpt_path, weights_only=True)
    return module, trainer


SLOW = {"vgg16_thresholded_lecam_r1"}  # 16 s: a VGG16 on CPU; the same terms with PatchGAN stay in the default suite


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n for n in sorted(SETTINGS)])
def test_setting_trains_and_resumes_exactly(tmp_path, image_folder, name):
    settings = SETTINGS[name]
    initial = {k: v.clone() for k, v in tiny_module(**({"loss": {"disc_start_step": 1}} | settings)).state_dict().items()}
    straight, trainer = _run(tmp_path / "straight", image_folder, settings, max_steps=6)
    state = straight.state_dict()
    assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())
    for prefix in ("autoencoder.", "discriminator.", "ema.module."):
        assert any(not torch.equal(state[k], initial[k]) for k in state if k.startswith(prefix)), prefix
    start = straight.loss_config.disc_start_step
    assert straight.counters.skipped_updates == 0 and straight.counters.discriminator_steps == 6 - start

    _run(tmp_path / "resumed", image_folder, settings, max_steps=3)
    resumed, resumed_trainer = _run(tmp_path / "resumed", image_folder, settings, max_steps=6, ckpt_path=str(tmp_path / "resumed" / "last.ckpt"))
    assert resumed.counters == straight.counters
    for key, value in state.items():
        assert torch.equal(value, resumed.state_dict()[key]), key
    for expected, actual in zip(trainer.optimizers, resumed_trainer.optimizers):
        for a, b in zip(expected.state.values(), actual.state.values()):
            assert all(torch.equal(a[k], b[k]) for k in a)


def test_width_scaled_lr_and_its_own_conv_in_lr():
    """vqgan-training's optimizer_G: lr / base width for everything but the parameters with "conv_in" in their
    names, the encoder's and the decoder's input convolutions (their own lr); refused for AutoencoderTiny."""
    module = tiny_module(optimizer=OptimizerConfig(name="adamw", lr=0.08, lr_scale="width", conv_in_lr=1e-4), discriminator_optimizer=OptimizerConfig())
    module.trainer = tiny_trainer(max_steps=1)
    (generator, _), _ = module.configure_optimizers()
    main, conv_in = generator.param_groups
    assert main["lr"] == pytest.approx(0.08 / 8) and conv_in["lr"] == 1e-4  # tiny width: block_out_channels[0] = 8
    names = {id(p): n for n, p in module.autoencoder.named_parameters()}
    assert (
        {names[id(p)] for p in conv_in["params"]}
        == {n for n in names.values() if "conv_in" in n}
        == {"encoder.conv_in.weight", "encoder.conv_in.bias", "decoder.conv_in.weight", "decoder.conv_in.bias"}
    )
    assert len(main["params"]) + 4 == len(list(module.autoencoder.parameters()))
    from tests.training.test_families import TINY
    from vaetrain.errors import ConfigError

    tiny = tiny_module(autoencoder=TINY, optimizer=OptimizerConfig(lr=0.08, conv_in_lr=1e-4), discriminator_optimizer=OptimizerConfig())
    tiny.trainer = tiny_trainer(max_steps=1)
    with pytest.raises(ConfigError, match="conv_in_lr: this autoencoder family has no conv_in layers"):
        tiny.configure_optimizers()


def test_scale_lr_is_ldms_global_batch_rule(datamodule):
    """LDM's main.py: lr = accumulate x GPUs x batch x base_lr (here 2 x 1 x 2 = 4 images per step)."""
    from vaetrain.training.config import GanOptimizers

    module = tiny_module(training={"accumulate_grad_batches": 2})
    module.optimizer_config = GanOptimizers(generator=OptimizerConfig(lr=1e-4), discriminator=OptimizerConfig(lr=2e-4), scale_lr=True)
    trainer = tiny_trainer(max_steps=1)
    trainer.fit(module, datamodule)
    assert [o.param_groups[0]["lr"] for o in trainer.optimizers] == pytest.approx([4e-4, 8e-4])


def test_fixed_posterior_samples_mu_times_one_plus_sigma_eps_and_exports_deterministically(tmp_path):
    module = tiny_module(autoencoder={"posterior": "fixed", "posterior_std": 0.5})
    images = (torch.rand(1, 3, 32, 32) * 2 - 1).repeat(400, 1, 1, 1)
    seen = []
    module.autoencoder.post_quant_conv.register_forward_pre_hook(lambda m, args: seen.append(args[0].detach()))
    with torch.no_grad():
        result = module.gan_step.reconstruct(images)
    mean, logvar = result.mean, result.logvar
    z = seen[0]
    assert logvar is None
    torch.testing.assert_close(z.mean(0), mean[0], atol=0.1 * mean.abs().max().item(), rtol=0)
    torch.testing.assert_close(z.std(0), 0.5 * mean[0].abs(), atol=0.05 * mean.abs().max().item(), rtol=0.15)

    exported = autoencoder_from_state(module.autoencoder.config, module.full_inference_state_dict())
    exported.save_pretrained(tmp_path / "vae")
    reloaded = AutoencoderKL.from_pretrained(tmp_path / "vae").eval()
    with torch.no_grad():
        posterior = reloaded.encode(images[:2]).latent_dist
        trained_mean = module.autoencoder.encode(images[:2]).latent_dist.mean
    torch.testing.assert_close(posterior.mean, trained_mean)
    assert posterior.std.max().item() < 1e-6  # latent_dist.sample() is the mean to float precision


def test_vgg16_discriminator_patch_logits_start_equal_for_every_image():
    """Five heads reach the 1/16 grid; their last weights start at zero, so at first every image gets the
    same logits (the heads' biases) and only training makes the discriminator discriminate."""
    torch.manual_seed(0)
    discriminator = VGGDiscriminator(DiscriminatorConfig(kind="vgg16", vgg_backbone="random"))
    logits = discriminator(torch.rand(3, 3, 64, 96) * 2 - 1)
    assert logits.shape == (3, (64 // 16) * (96 // 16))
    assert torch.allclose(logits[0], logits[1]) and torch.allclose(logits[1], logits[2])
    assert all(torch.count_nonzero(head[-1].weight) == 0 for head in discriminator.heads)
    assert all(p.requires_grad for p in discriminator.slices.parameters())  # the VGG itself trains too


def test_vgg16_discriminator_without_weights_is_one_line(tmp_path, monkeypatch):
    import torchvision.models._api

    from vaetrain.errors import PretrainedWeightsUnavailable

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(torchvision.models._api, "load_state_dict_from_url", lambda *a, **k: (_ for _ in ()).throw(OSError("offline")))
    with pytest.raises(PretrainedWeightsUnavailable, match=r"vgg16-397923af.pth.*vgg_backbone=random") as error:
        VGGDiscriminator(DiscriminatorConfig(kind="vgg16", vgg_backbone="pretrained"))
    assert "\n" not in str(error.value)


def test_the_alignment_projection_trains_and_is_not_exported(tmp_path, datamodule):
    module = tiny_module(loss={"alignment": AlignmentConfig(weight=0.1, encoder="random-small")})
    before = module.alignment_projection.projection.weight.detach().clone()
    checkpoint = ModelCheckpoint(dirpath=tmp_path, save_last=True)
    tiny_trainer(tmp_path, max_steps=3, callbacks=[checkpoint], enable_checkpointing=True).fit(module, datamodule)
    assert not torch.equal(before, module.alignment_projection.projection.weight)  # trained with the autoencoder
    assert torch.isfinite(module.alignment_projection.ratio)  # the adaptive weight was measured
    saved = torch.load(tmp_path / "last.ckpt", weights_only=True)["state_dict"]
    assert any(k.startswith("alignment_projection.") for k in saved) and not any(k.startswith("alignment_encoder.") for k in saved)
    exported = autoencoder_from_state(module.autoencoder.config, module.full_inference_state_dict())  # strict: no extra keys
    assert not any("alignment" in k for k in exported.state_dict())


def test_gradient_normalisation_refuses_accumulation(datamodule):
    """k micro-batches normalised one by one would train sqrt(k) weaker than one batch: refused in one line,
    whether accumulation is configured or follows from a global batch size."""
    from vaetrain.errors import ConfigError

    with pytest.raises(ConfigError, match=r"model.loss.balance=gradnorm cannot accumulate gradients \(2 micro-batches"):
        tiny_module(loss={"balance": "gradnorm"}, training={"accumulate_grad_batches": 2})
    module = tiny_module(loss={"balance": "gradnorm"}, training={"global_batch_size": 4})  # data.batch_size 2: accumulation 2
    with pytest.raises(ConfigError, match="gradnorm cannot accumulate"):
        tiny_trainer(max_steps=1).fit(module, datamodule)


def test_amsgrad_reaches_the_optimizer():
    from vaetrain.training.optim import build_optimizer

    weight = torch.nn.Parameter(torch.zeros(2))
    assert build_optimizer([{"params": [weight], "lr": 3e-4}], OptimizerConfig(lr=3e-4, betas=(0.9, 0.9), amsgrad=True)).defaults["amsgrad"] is True
    assert build_optimizer([{"params": [weight], "lr": 3e-4}], OptimizerConfig()).defaults["amsgrad"] is False
