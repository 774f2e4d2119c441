"""Every autoencoder family trains, resumes exactly, exports and reloads in diffusers with identical outputs;
DC-AE's phase presets train exactly the parameters they name; distillation's targets are the teacher's."""

import inspect
import json
from pathlib import Path

import lightning as L
import pytest
import torch
import yaml
from diffusers import AutoencoderDC, AutoencoderKL, AutoencoderTiny
from lightning.pytorch.callbacks import ModelCheckpoint

from tests.conftest import tiny_diffusers_kl, tiny_module, tiny_trainer
from vaetrain.checkpoints.references import load_autoencoder
from vaetrain.data import SampleDataModule
from vaetrain.errors import ConfigError
from vaetrain.export.diffusers_folder import export_model
from vaetrain.export.model_card import CardFacts
from vaetrain.losses.alignment import AlignmentConfig
from vaetrain.losses.distillation import DistillationConfig
from vaetrain.models.autoencoder import AutoencoderConfig, autoencoder_from_state, build_autoencoder
from vaetrain.models.families import decode, encode

CONFIGS = Path(__file__).parents[2] / "configs"
KL_ONLY = {"norm_num_groups": 32}  # conftest's tiny KL sets 4 groups; other families refuse KL-only fields
TINY = {
    "family": "tiny",
    **KL_ONLY,
    "architecture": {"encoder_block_out_channels": [8, 8], "decoder_block_out_channels": [8, 8], "num_encoder_blocks": [1, 1], "num_decoder_blocks": [1, 1]},
}
DC = {
    "family": "dc",
    **KL_ONLY,
    "latent_channels": 8,
    "architecture": {
        "attention_head_dim": 8,
        "encoder_block_types": ["ResBlock", "ResBlock", "EfficientViTBlock"],
        "decoder_block_types": ["ResBlock", "ResBlock", "EfficientViTBlock"],
        "encoder_block_out_channels": [8, 16, 16],
        "decoder_block_out_channels": [8, 16, 16],
        "encoder_layers_per_block": [1, 1, 1],
        "decoder_layers_per_block": [1, 1, 1],
        "encoder_qkv_multiscales": [[], [], [5]],
        "decoder_qkv_multiscales": [[], [], [5]],
        "decoder_norm_types": "rms_norm",
        "decoder_act_fns": "silu",
    },
}
CLASSES = {"tiny": AutoencoderTiny, "dc": AutoencoderDC}


def _data(folder: Path) -> SampleDataModule:
    return SampleDataModule(path=str(folder), resolution=32, batch_size=2, val_size=2, num_workers=0, seed=0)


def _run(root: Path, folder: Path, settings: dict, max_steps: int, ckpt_path: str | None = None, **module_kwargs):
    L.seed_everything(0)
    module = tiny_module(**settings)
    for name, value in module_kwargs.items():
        setattr(module, name, value)
    checkpoint = ModelCheckpoint(dirpath=root, save_last=True, every_n_train_steps=2)
    trainer = tiny_trainer(root, max_steps=max_steps, callbacks=[checkpoint], enable_checkpointing=True)
    trainer.fit(module, _data(folder), ckpt_path=ckpt_path, weights_only=True)
    return module, trainer


def _resumes_exactly(tmp_path: Path, folder: Path, settings: dict):
    straight, _ = _run(tmp_path / "straight", folder, settings, max_steps=4)
    _run(tmp_path / "resumed", folder, settings, max_steps=2)
    resumed, _ = _run(tmp_path / "resumed", folder, settings, max_steps=4, ckpt_path=str(tmp_path / "resumed" / "last.ckpt"))
    assert resumed.counters == straight.counters
    state = straight.state_dict()
    assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())
    for key, value in state.items():
        assert torch.equal(value, resumed.state_dict()[key]), key
    return straight


@pytest.mark.parametrize("family", ["tiny", "dc"])
def test_family_trains_resumes_exports_and_reloads_identically(tmp_path, image_folder, family):
    settings = {"autoencoder": TINY if family == "tiny" else DC, "loss": {"disc_start_step": 1}}
    initial = {k: v.clone() for k, v in tiny_module(**settings).autoencoder.state_dict().items()}
    module = _resumes_exactly(tmp_path, image_folder, settings)
    assert type(module.autoencoder) is CLASSES[family]
    assert module.counters.discriminator_steps == 3
    assert any(not torch.equal(v, initial[k]) for k, v in module.autoencoder.state_dict().items())

    model = autoencoder_from_state(dict(module.autoencoder.config), module.full_inference_state_dict())
    folder = export_model(model, tmp_path / "export", None, facts=CardFacts(settings={"autoencoder": {}, "loss": {}}))
    reloaded = CLASSES[family].from_pretrained(folder).eval()
    assert type(load_autoencoder(folder)) is CLASSES[family]
    written = json.loads((folder / "config.json").read_text())  # nothing diffusers would warn about at load
    assert {k for k in written if not k.startswith("_")} <= set(inspect.signature(CLASSES[family].__init__).parameters)
    images = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        expected = module.eval()(images)
        actual = decode(reloaded, encode(reloaded, images).mode())
    assert torch.equal(expected, actual)


def _preset(name: str) -> dict:
    return yaml.safe_load((CONFIGS / name).read_text())


@pytest.mark.parametrize("phase", ["dc-ae-f32-phase2.yaml", "dc-ae-f32-phase3.yaml"])
def test_dc_phase_presets_train_exactly_the_named_parameters(tmp_path, image_folder, phase):
    """The phase preset's prefixes, applied to the CPU DC-AE preset's architecture: by parameter name, the
    trainable set is exactly what they name, and training changes those and nothing else."""
    base = _preset("dc-ae-tiny.yaml")["model"]["autoencoder"]
    prefixes = _preset(phase)["model"]["autoencoder"]["trainable"]
    config = AutoencoderConfig(family="dc", latent_channels=base["latent_channels"], architecture=base["architecture"], trainable=prefixes)
    model = build_autoencoder(config)
    names = {n for n, _ in model.named_parameters()}
    expected = {n for n in names if any(n.startswith(p) for p in prefixes)}
    assert expected and expected != names
    assert {n for n, p in model.named_parameters() if p.requires_grad} == expected

    settings = {
        "autoencoder": DC
        | {"trainable": prefixes if phase.endswith("3.yaml") else ["encoder.down_blocks.2", "encoder.conv_out", "decoder.conv_in", "decoder.up_blocks.2"]},
        "loss": {"disc_start_step": 0},
    }
    initial = {k: v.clone() for k, v in tiny_module(**settings).autoencoder.state_dict().items()}
    module = _resumes_exactly(tmp_path, image_folder, settings)  # resumes mid-phase
    trainable = {n for n, p in module.autoencoder.named_parameters() if p.requires_grad}
    optimized = {id(p) for group in module.trainer.optimizers[0].param_groups for p in group["params"]}
    assert optimized == {id(p) for n, p in module.autoencoder.named_parameters() if n in trainable}
    for name, value in module.autoencoder.state_dict().items():
        assert torch.equal(value, initial[name]) != (name in trainable), name


def test_a_prefix_that_names_nothing_is_refused():
    with pytest.raises(ConfigError, match="decoder.up_blocks.9"):
        build_autoencoder(AutoencoderConfig(**DC, trainable=["decoder.up_blocks.9"]))


def test_kl_only_terms_are_refused_for_other_families():
    with pytest.raises(ConfigError, match="kl family"):
        tiny_module(autoencoder=TINY, loss={"alignment": AlignmentConfig(weight=0.1, encoder="random-small")})
    with pytest.raises(ConfigError, match="deterministic"):
        AutoencoderConfig(family="tiny", posterior="fixed")


def _teacher(scaling_factor: float = 0.5, shift_factor: float = 0.1) -> AutoencoderKL:
    teacher = tiny_diffusers_kl(seed=1)
    teacher.register_to_config(scaling_factor=scaling_factor, shift_factor=shift_factor)
    return teacher.eval()


def _student(teacher, **distillation):
    from tests.conftest import tiny_autoencoder_config
    from vaetrain.losses import LossConfig
    from vaetrain.training.module import AutoencoderModule

    torch.manual_seed(0)
    loss = LossConfig(perceptual_weight=0.0, kl_weight=0.0, disc_start_step=1, distillation=DistillationConfig(**({"encoder_weight": 2.0} | distillation)))
    return AutoencoderModule(autoencoder=tiny_autoencoder_config(**TINY), loss=loss, teacher=teacher)


def test_distillation_targets_are_the_latents_the_teachers_pipeline_sees():
    teacher = _teacher()
    module = _student(teacher)
    images = torch.rand(2, 3, 16, 16) * 2 - 1
    result = module.gan_step.reconstruct(images)
    with torch.no_grad():
        scaled = (teacher.encode(images).latent_dist.mean - 0.1) * 0.5
        student_latents = module.autoencoder.encode(images).latents
        expected_decode = module.autoencoder.decode(scaled).sample
    assert torch.allclose(result.mean, scaled, atol=1e-6)
    assert torch.allclose(result.images, expected_decode, atol=1e-6)  # the decoder reads the teacher's latents
    assert torch.allclose(result.extra_loss, 2.0 * ((student_latents - scaled) ** 2).mean(), rtol=1e-5)
    assert torch.equal(result.target, images)
    assert result.extra_loss.requires_grad and not any(p.requires_grad for p in module.teacher.parameters())

    # an SDXL-style teacher: its pipeline reads (z - latents_mean) * scaling_factor / latents_std per channel
    sdxl_like = _teacher(scaling_factor=0.13)
    sdxl_like.register_to_config(latents_mean=[0.1, -0.2, 0.3, 0.0], latents_std=[2.0, 1.0, 0.5, 4.0])
    with torch.no_grad():
        mean, std = torch.tensor([0.1, -0.2, 0.3, 0.0]).view(1, 4, 1, 1), torch.tensor([2.0, 1.0, 0.5, 4.0]).view(1, 4, 1, 1)
        expected = (sdxl_like.encode(images).latent_dist.mean - mean) * 0.13 / std
    assert torch.allclose(_student(sdxl_like).gan_step.reconstruct(images).mean, expected, atol=1e-6)

    decoded_target = _student(teacher, decoder_target="teacher").gan_step.reconstruct(images).target
    with torch.no_grad():
        assert torch.allclose(decoded_target, teacher.decode(teacher.encode(images).latent_dist.mean).sample.clamp(-1, 1), atol=1e-6)


def test_distilled_student_trains_is_not_checkpointed_with_its_teacher_and_exports_at_scale_one(tmp_path, image_folder):
    teacher = _teacher()
    module = _student(teacher)
    trainer = tiny_trainer(tmp_path, max_steps=3)
    before = {k: v.clone() for k, v in module.autoencoder.state_dict().items()}
    trainer.fit(module, _data(image_folder))
    assert any(not torch.equal(v, before[k]) for k, v in module.autoencoder.state_dict().items())
    assert not any(k.startswith("teacher.") for k in module.state_dict())
    model = autoencoder_from_state(dict(module.autoencoder.config), module.full_inference_state_dict())
    settings = {"autoencoder": {}, "loss": {"distillation": {"teacher": "teacher-folder"}}}
    folder = export_model(model, tmp_path / "export", _data(image_folder).describe(), facts=CardFacts(settings=settings))
    reloaded = AutoencoderTiny.from_pretrained(folder)
    assert reloaded.config.scaling_factor == 1.0 and (folder / "latent_statistics.json").is_file()


def test_a_teacher_with_other_latents_is_refused():
    from tests.conftest import tiny_autoencoder_config
    from vaetrain.losses import LossConfig
    from vaetrain.training.module import AutoencoderModule

    with pytest.raises(ConfigError, match="latent_channels 4"):
        AutoencoderModule(autoencoder=tiny_autoencoder_config(**(TINY | {"latent_channels": 8})), loss=LossConfig(perceptual_weight=0.0), teacher=_teacher())
