"""The ltx family (AutoencoderKLLTXVideo): LTX-Video's layout at CPU size, its denoising decoder trained
through the one step (noise level drawn per clip, the decoder conditioned on it), and its export as
LTXPipeline reads it (per-channel statistics in the model's buffers, the decode timestep in its config)."""

import json
from pathlib import Path

import pytest
import torch
from diffusers import AutoencoderKLLTXVideo, LTXPipeline

from tests.conftest import fit_with_checkpoints, tiny_module, tiny_trainer
from vaetrain.data import SampleDataModule
from vaetrain.errors import ConfigError
from vaetrain.export.diffusers_folder import export_model
from vaetrain.export.model_card import CardFacts
from vaetrain.losses.denoising_decoder import DenoisingDecoderConfig, noised_latents
from vaetrain.models import AutoencoderConfig
from vaetrain.models.autoencoder import autoencoder_from_state, build_autoencoder
from vaetrain.models.families import decode, encode, family_of
from vaetrain.models.latent_space import pipeline_normalize

TINY_LTX = {
    "family": "ltx",
    "block_out_channels": [4, 8, 8, 8],
    "layers_per_block": 1,
    "latent_channels": 4,
    "norm_num_groups": 32,  # the default: ltx normalises with RMSNorm (conftest's tiny configs set 4)
    "architecture": {
        "patch_size": 2,
        "timestep_conditioning": True,
        "decoder_block_out_channels": [8, 16, 32],
        "decoder_layers_per_block": [1, 1, 1, 1],
        "decoder_spatio_temporal_scaling": [True, True, True],
        "decoder_inject_noise": [False, False, False, False],
        "upsample_residual": [True, True, True],
        "upsample_factor": [2, 2, 2],
    },
}
"""LTX-Video 0.9.1's layout at CPU size: 8x in time, 16x in space (patch 2), a timestep-conditioned decoder."""
DENOISING = DenoisingDecoderConfig(max_timestep=0.2, decode_timestep=0.07)


def _data(folder: Path, frames: int = 9) -> SampleDataModule:
    return SampleDataModule(path=str(folder), frames=frames, resolution=32, batch_size=2, val_size=2, num_workers=0, seed=0)


def _module(**loss):
    return tiny_module(autoencoder=TINY_LTX, loss={"disc_start_step": 1, "denoising_decoder": DENOISING} | loss, discriminator={"kind": "patchgan3d"})


def _run(root: Path, folder: Path, max_steps: int, ckpt_path: str | None = None):
    module = _module()
    fit_with_checkpoints(root, module, _data(folder), max_steps, ckpt_path=ckpt_path)
    return module


def test_ltx_trains_resumes_exactly_and_reloads_in_diffusers_with_identical_outputs(tmp_path, video_folder):
    straight = _run(tmp_path / "straight", video_folder, 4)
    _run(tmp_path / "resumed", video_folder, 2)
    resumed = _run(tmp_path / "resumed", video_folder, 4, ckpt_path=str(tmp_path / "resumed" / "last.ckpt"))
    for key, value in straight.state_dict().items():  # weights, EMA, discriminator: the noise draws resumed too
        assert torch.equal(value, resumed.state_dict()[key]), key
    assert straight.counters.generator_steps == 4 and straight.counters.samples_seen == resumed.counters.samples_seen == 8

    model = autoencoder_from_state(dict(straight.autoencoder.config), straight.full_inference_state_dict())
    folder = export_model(model, tmp_path / "export", _data(video_folder).describe(), facts=CardFacts(settings={"autoencoder": {}, "loss": {}}))
    reloaded = AutoencoderKLLTXVideo.from_pretrained(folder).eval()
    assert json.loads((folder / "config.json").read_text())["_decode_timestep"] == reloaded.config["_decode_timestep"] == 0.07
    clips = torch.rand(2, 3, 9, 32, 32) * 2 - 1
    with torch.no_grad():
        latents = encode(model, clips).mean
        assert latents.shape == (2, 4, 2, 2, 2)
        assert torch.equal(reloaded.encode(clips).latent_dist.mean, latents)
        at_timestep = reloaded.decode(latents, torch.full((2,), reloaded.config["_decode_timestep"])).sample
        assert torch.equal(at_timestep, decode(model, latents)) and torch.equal(decode(reloaded, latents), at_timestep)
        assert not torch.allclose(reloaded.decode(latents, torch.zeros(2)).sample, at_timestep)  # the timestep matters

    statistics = json.loads((folder / "latent_statistics.json").read_text())  # per channel, in the buffers LTXPipeline reads
    assert reloaded.latents_mean.tolist() == pytest.approx(statistics["channel_mean"]) and reloaded.config.scaling_factor == 1.0
    assert reloaded.latents_std.tolist() == pytest.approx(statistics["channel_std"]) and statistics["channel_std"] != [1.0] * 4
    z = torch.randn(2, 4, 2, 2, 2)
    ltx = LTXPipeline._normalize_latents(z, reloaded.latents_mean, reloaded.latents_std, reloaded.config.scaling_factor)
    assert torch.allclose(ltx, pipeline_normalize(family_of(reloaded).normalisation(reloaded), z), atol=1e-6)
    assert "decode_timestep=0.07" in (folder / "README.md").read_text()


class _DecoderInputs:
    """What diffusers' LTXVideoDecoder3d is called with: (latents, timestep) per call."""

    def __init__(self, model) -> None:
        self.calls: list[tuple[torch.Tensor, torch.Tensor | None]] = []
        model.decoder.register_forward_pre_hook(self.record, with_kwargs=True)

    def record(self, module, args, kwargs) -> None:
        temb = args[1] if len(args) > 1 else kwargs.get("temb")
        self.calls.append((args[0].detach().clone(), None if temb is None else temb.detach().clone()))


def test_noise_is_drawn_per_clip_in_training_only_and_the_timestep_reaches_the_decoder():
    z, eps, t = torch.full((2, 1, 1, 1, 1), 2.0), torch.full((2, 1, 1, 1, 1), -1.0), torch.tensor([0.0, 0.25])
    assert noised_latents(z, t, eps).flatten().tolist() == [2.0, 0.75 * 2.0 + 0.25 * -1.0]  # (1 - t) z + t eps by hand

    module = _module(sample_posterior=False)
    recorder = _DecoderInputs(module.autoencoder)
    clips = torch.rand(3, 3, 9, 32, 32) * 2 - 1
    torch.manual_seed(1)
    reconstruction = module.gan_step.forward(clips)
    (latents, timesteps) = recorder.calls[-1]
    with torch.no_grad():
        clean = encode(module.autoencoder, clips).mean
    assert timesteps.shape == (3,) and len(set(timesteps.tolist())) == 3 and 0 <= timesteps.min() and timesteps.max() <= 0.2
    eps = (latents - (1 - timesteps.view(-1, 1, 1, 1, 1)) * clean) / timesteps.view(-1, 1, 1, 1, 1)  # the noise drawn
    assert eps.std().item() == pytest.approx(1.0, abs=0.35) and not torch.allclose(latents, clean)
    assert reconstruction.images.requires_grad

    with torch.no_grad():  # validation, eval, recon: the family's decode at decode_timestep, the clean latent
        first = module(clips)
        assert torch.equal(recorder.calls[-1][0], encode(module.inference_autoencoder(), clips).mean)
        assert recorder.calls[-1][1].tolist() == pytest.approx([0.07] * 3)
        assert torch.equal(module(clips), first)


def test_without_max_timestep_training_decodes_clean_latents_at_the_decode_timestep():
    module = _module(sample_posterior=False, denoising_decoder=DenoisingDecoderConfig(decode_timestep=0.3))
    recorder = _DecoderInputs(module.autoencoder)
    clips = torch.rand(2, 3, 9, 32, 32) * 2 - 1
    module.gan_step.forward(clips)
    latents, timesteps = recorder.calls[-1]
    with torch.no_grad():
        assert torch.equal(latents, encode(module.autoencoder, clips).mean)
    assert timesteps.tolist() == pytest.approx([0.3, 0.3])


@pytest.mark.parametrize("frames", [1, 9, 17, 25])
def test_clip_lengths_across_the_causal_chunks(frames):
    """1 + 8k frames in, 1 + k latent frames out, the clip's length back; the encoder is causal: the first
    frame's latent (and each chunk's) does not depend on later frames."""
    torch.manual_seed(0)
    model = build_autoencoder(AutoencoderConfig(**TINY_LTX)).eval()
    family = family_of(model)
    family.check_frames(model, frames)
    clips = torch.rand(1, 3, frames, 32, 32) * 2 - 1
    with torch.no_grad():
        latents = encode(model, clips).mean
        assert latents.shape[2] == 1 + (frames - 1) // 8 and decode(model, latents).shape == clips.shape
        for kept in range(1, latents.shape[2] + 1):  # the first frame alone, then chunk by chunk
            prefix = encode(model, clips[:, :, : 1 + 8 * (kept - 1)]).mean
            assert torch.allclose(prefix, latents[:, :, :kept], atol=1e-5)


@pytest.mark.parametrize("frames", [2, 5, 8, 10, 16, 18])
def test_other_clip_lengths_are_refused_in_one_line_naming_data_frames(tmp_path, video_folder, frames):
    model = build_autoencoder(AutoencoderConfig(**TINY_LTX))
    with pytest.raises(ConfigError, match=f"data.frames={frames}: AutoencoderKLLTXVideo reads clips of 1 \\+ 8k frames"):
        family_of(model).check_frames(model, frames)
    if frames == 5:  # and from a run, before any step
        with pytest.raises(ConfigError, match="data.frames=5"):
            tiny_trainer(tmp_path, max_steps=1).fit(_module(), _data(video_folder, frames=5))


def test_denoising_decoder_settings_need_a_timestep_conditioned_ltx_decoder():
    with pytest.raises(ConfigError, match="model.loss.denoising_decoder needs .*ltx family; the autoencoder is wan"):
        wan = {"family": "wan", "block_out_channels": [8, 16, 16], "latent_channels": 4, "norm_num_groups": 32}
        tiny_module(autoencoder=wan, loss={"denoising_decoder": DENOISING})
    unconditioned = TINY_LTX | {"architecture": {"patch_size": 2}}
    with pytest.raises(ConfigError, match="architecture.timestep_conditioning: true"):
        tiny_module(autoencoder=unconditioned, loss={"denoising_decoder": DENOISING})
    with pytest.raises(ConfigError, match="max_timestep must be in \\[0, 1\\]"):
        DenoisingDecoderConfig(max_timestep=1.5)
    with pytest.raises(ConfigError, match="keep their width"):
        build_autoencoder(AutoencoderConfig(**(TINY_LTX | {"architecture": {"timestep_conditioning": True}})))


@pytest.mark.parametrize("frames", [1, 17])
def test_the_adaptive_weight_reads_the_last_convolution_through_the_unpatchify(frames):
    """LDM's adaptive weight takes the decoder's last convolution's weight gradient directly; LTX's decoder
    rearranges that convolution's output (patch channels into pixels): the direct gradient equals autograd's."""
    from vaetrain.models.last_layers import LastLayerInput

    torch.manual_seed(0)
    model = build_autoencoder(AutoencoderConfig(**TINY_LTX))
    recorder = LastLayerInput(model)
    clips = torch.rand(2, 3, frames, 32, 32) * 2 - 1
    reconstruction = decode(model, encode(model, clips).mean)
    gradient = torch.randn_like(reconstruction)
    (expected,) = torch.autograd.grad((reconstruction * gradient).sum(), family_of(model).last_conv(model).weight)
    assert torch.allclose(recorder.take_weight_gradient()(gradient), expected, rtol=1e-4, atol=1e-4 * expected.abs().max().item())


@pytest.mark.slow  # fit, eval and recon of every clip; the default suite keeps the train/resume/export test above
def test_ltx_tiny_from_the_command_line(tmp_path, video_folder):
    """The preset trains, validates on its EMA copy, exports at the end of fit, evaluates and reconstructs whole
    videos (9 frames: 1 + 8k, padded by recon as any length would be)."""
    from vaetrain.cli import main
    from vaetrain.data.decoding.video import read_video

    run = tmp_path / "run"
    data = ["--data.path", str(video_folder), "--data.frames", "9", "--data.resolution", "32", "--data.num_workers", "0"]
    main(
        ["fit", "--config", "configs/ltx-tiny.yaml", *data, "--model.discriminator.base_channels", "8", "--trainer.max_steps", "2"]
        + ["--model.loss.disc_start_step", "1", "--trainer.val_check_interval", "2", "--trainer.default_root_dir", str(run)]
    )
    reloaded = AutoencoderKLLTXVideo.from_pretrained(run / "diffusers")
    assert reloaded.config.timestep_conditioning and reloaded.config["_decode_timestep"] == 0.05 and reloaded.latents_std.shape == (32,)
    main(["eval", str(run / "diffusers"), *data, "--metrics", "psnr,ssim", "--out", str(tmp_path / "eval")])
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text())[0]["images"] == 8
    main(["recon", str(run / "diffusers"), str(video_folder), "--out", str(tmp_path / "recon")])
    for video in sorted(video_folder.glob("*.mp4"))[:2]:
        assert read_video(tmp_path / "recon" / video.name)[0].shape == read_video(video)[0].shape == (9, 3, 40, 40)


def test_decoder_only_fine_tune_of_a_released_ltx_vae_keeps_its_latents_and_records_the_decode_timestep(tmp_path):
    """A randomly initialised "release" with per-channel statistics in its buffers (real weights cannot be
    downloaded here): a decoder-only step leaves encoder and buffers as released, trains the decoder's
    timestep embedding, and the export (no statistics measured) keeps the buffers LTXPipeline reads."""
    from vaetrain.training.engines import PlainEngine

    torch.manual_seed(0)
    release = build_autoencoder(AutoencoderConfig(**TINY_LTX)).eval()
    release.latents_mean.copy_(torch.tensor([0.1, -0.2, 0.3, 0.0]))
    release.latents_std.copy_(torch.tensor([1.5, 2.0, 0.5, 1.0]))
    release.save_pretrained(tmp_path / "release")
    pretrained = {"family": "ltx", "pretrained": str(tmp_path / "release"), "train_encoder": False, "block_out_channels": [4, 8, 8, 8]}
    pretrained |= {"layers_per_block": 2, "norm_num_groups": 32}  # the defaults: a released model keeps its own
    module = tiny_module(autoencoder=pretrained, loss={"disc_start_step": 1, "denoising_decoder": DENOISING}, discriminator={"kind": "patchgan3d"})
    step = module.gan_step
    networks = {"generator": module.autoencoder, "discriminator": module.discriminator}
    step(torch.rand(2, 3, 9, 32, 32) * 2 - 1, PlainEngine(step, {name: torch.optim.SGD(n.parameters(), lr=1e-2) for name, n in networks.items()}))

    tuned, released = module.autoencoder.state_dict(), release.state_dict()
    assert all(torch.equal(tuned[k], released[k]) for k in released if k.startswith("encoder.") or k.startswith("latents_"))
    embedding = "decoder.time_embedder.timestep_embedder.linear_1.weight"
    assert not torch.equal(tuned[embedding], released[embedding])
    model = autoencoder_from_state(dict(module.autoencoder.config), module.full_inference_state_dict())
    folder = export_model(model, tmp_path / "export", None, facts=CardFacts(settings={"autoencoder": {}, "loss": {}}))
    reloaded = AutoencoderKLLTXVideo.from_pretrained(folder)
    assert reloaded.latents_mean.tolist() == pytest.approx([0.1, -0.2, 0.3, 0.0]) and reloaded.latents_std.tolist() == [1.5, 2.0, 0.5, 1.0]
    assert reloaded.config["_decode_timestep"] == 0.07
