"""The video families (AutoencoderKLWan, AutoencoderKLHunyuanVideo): clips train through the one step, resume
exactly, and export a folder that diffusers reloads with identical outputs and standardised latents under
their pipelines' own formulas."""

import json
from pathlib import Path

import pytest
import torch
from diffusers import AutoencoderKLHunyuanVideo, AutoencoderKLWan

from tests.conftest import TINY_HUNYUAN, TINY_WAN, fit_with_checkpoints, tiny_module, tiny_trainer
from vaetrain.cli import main
from vaetrain.data import SampleDataModule
from vaetrain.data.decoding.video import read_video
from vaetrain.errors import ConfigError
from vaetrain.evaluation.metrics import ReconstructionMetrics, flicker
from vaetrain.export.diffusers_folder import export_model
from vaetrain.export.model_card import CardFacts
from vaetrain.losses.terms import kl_divergence
from vaetrain.models import AutoencoderConfig
from vaetrain.models.autoencoder import autoencoder_from_state, build_autoencoder
from vaetrain.models.families import decode, encode, family_of
from vaetrain.models.last_layers import LastLayerInput
from vaetrain.models.latent_space import pipeline_normalize


def _data(folder: Path, frames: int = 5) -> SampleDataModule:
    return SampleDataModule(path=str(folder), frames=frames, resolution=32, batch_size=2, val_size=2, num_workers=0, seed=0)


FAMILIES = {"wan": (TINY_WAN, AutoencoderKLWan), "hunyuan": (TINY_HUNYUAN, AutoencoderKLHunyuanVideo)}


def _run(root: Path, folder: Path, max_steps: int, ckpt_path: str | None = None, family: dict = TINY_WAN):
    module = tiny_module(autoencoder=family, loss={"disc_start_step": 1}, discriminator={"kind": "patchgan3d"})  # the adaptive GAN weight from step 1
    fit_with_checkpoints(root, module, _data(folder), max_steps, ckpt_path=ckpt_path)
    return module


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_video_family_trains_resumes_exactly_and_reloads_in_diffusers_with_identical_outputs(tmp_path, video_folder, name):
    family, model_class = FAMILIES[name]
    straight = _run(tmp_path / "straight", video_folder, 4, family=family)
    _run(tmp_path / "resumed", video_folder, 2, family=family)
    resumed = _run(tmp_path / "resumed", video_folder, 4, ckpt_path=str(tmp_path / "resumed" / "last.ckpt"), family=family)
    for key, value in straight.state_dict().items():  # weights, EMA, discriminator
        assert torch.equal(value, resumed.state_dict()[key]), key
    assert straight.counters.generator_steps == 4 and straight.counters.samples_seen == resumed.counters.samples_seen == 8

    model = autoencoder_from_state(dict(straight.autoencoder.config), straight.full_inference_state_dict())
    folder = export_model(model, tmp_path / "export", _data(video_folder).describe(), facts=CardFacts(settings={"autoencoder": {}, "loss": {}}))
    reloaded = model_class.from_pretrained(folder).eval()
    clips = torch.rand(2, 3, 9, 32, 32) * 2 - 1
    with torch.no_grad():
        latents = encode(model, clips).mean
        assert latents.shape == (2, 4, 3, 8, 8)
        assert torch.equal(reloaded.encode(clips).latent_dist.mean, latents)
        assert torch.equal(reloaded.decode(latents).sample, decode(model, latents))
    statistics = json.loads((folder / "latent_statistics.json").read_text())
    if name == "wan":  # per channel, as Wan's pipelines read it
        assert reloaded.config.latents_mean == pytest.approx(statistics["channel_mean"]) and "scaling_factor" not in reloaded.config
    else:  # one scale, as HunyuanVideo's pipeline reads it
        assert reloaded.config.scaling_factor == pytest.approx(statistics["scaling_factor"]) != 0.476986


def test_exported_latents_are_standardised_by_wans_own_formula(tmp_path, video_folder):
    """WanPipeline: latents = (z - latents_mean) / latents_std (pipeline_wan.py), on the clips measured."""
    torch.manual_seed(0)
    model = build_autoencoder(AutoencoderConfig(**TINY_WAN)).eval()
    data = _data(video_folder)
    folder = export_model(model, tmp_path / "export", data.describe(), part="all", facts=CardFacts(settings={"autoencoder": {}, "loss": {}}))
    reloaded = AutoencoderKLWan.from_pretrained(folder).eval()
    data.prepare_split()
    clips = torch.stack([s["pixels"] for s in data.samples("all", train=False)])
    torch.manual_seed(1)
    with torch.no_grad():
        z = reloaded.encode(clips).latent_dist.sample()
    mean = torch.tensor(reloaded.config.latents_mean).view(1, -1, 1, 1, 1)
    std = torch.tensor(reloaded.config.latents_std).view(1, -1, 1, 1, 1)
    wan = (z - mean) / std
    assert torch.allclose(wan, pipeline_normalize(reloaded.config, z), atol=1e-6)
    per_channel = wan.transpose(0, 1).flatten(1)
    assert per_channel.mean(dim=1).abs().max() < 0.15 and (per_channel.std(dim=1) - 1).abs().max() < 0.15


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_the_adaptive_weight_reads_the_last_convolution_of_every_chunk(name):
    """Wan decodes latent frame by latent frame through a causal 3D convolution with cached frames (and
    HunyuanVideo the clip at once): the directly computed weight gradient equals autograd's over the clip."""
    torch.manual_seed(0)
    model = build_autoencoder(AutoencoderConfig(**FAMILIES[name][0]))
    recorder = LastLayerInput(model)
    clips = torch.rand(2, 3, 9, 16, 16) * 2 - 1
    reconstruction = decode(model, encode(model, clips).mean)
    gradient = torch.randn_like(reconstruction)
    (expected,) = torch.autograd.grad((reconstruction * gradient).sum(), family_of(model).last_conv(model).weight)
    assert torch.allclose(recorder.take_weight_gradient()(gradient), expected, rtol=1e-4, atol=1e-4 * expected.abs().max().item())


def test_kl_and_metrics_of_clips_are_those_of_their_frames():
    torch.manual_seed(0)
    mean, logvar = torch.randn(2, 4, 3, 5, 5), torch.randn(2, 4, 3, 5, 5) * 0.5
    by_hand = 0.5 * (mean.square() + logvar.exp() - 1 - logvar)
    assert kl_divergence(mean, logvar, "mean").item() == pytest.approx(by_hand.mean().item(), rel=1e-5)
    assert kl_divergence(mean, logvar, "sum").item() == pytest.approx(by_hand.sum(dim=(1, 2, 3, 4)).mean().item(), rel=1e-5)

    clips = torch.rand(2, 3, 4, 16, 16) * 1.6 - 0.8
    offset = clips + 0.1  # the same error in every frame: no flicker
    blinking = clips + 0.1 * (torch.arange(4) % 2).view(1, 1, 4, 1, 1)  # every other frame brighter
    assert flicker(clips / 2 + 0.5, offset / 2 + 0.5).max() < 1e-4
    assert flicker(clips / 2 + 0.5, blinking / 2 + 0.5).tolist() == pytest.approx([0.05 * 255] * 2, rel=1e-4)
    on_clips, on_frames = ReconstructionMetrics(), ReconstructionMetrics()
    on_clips.update(clips, blinking)
    on_frames.update(clips.transpose(1, 2).flatten(0, 1), blinking.transpose(1, 2).flatten(0, 1))
    values, expected = on_clips.compute(), on_frames.compute()
    assert values["psnr"] == pytest.approx(expected["psnr"]) and values["ssim"] == pytest.approx(expected["ssim"])
    assert values["flicker"] == pytest.approx(0.05 * 255, rel=1e-4) and "flicker" not in expected


def test_clips_and_families_must_agree(tmp_path, video_folder, image_folder):
    trainer = tiny_trainer(tmp_path, max_steps=1)
    with pytest.raises(ConfigError, match="1 \\+ 4k frames"):
        trainer.fit(tiny_module(autoencoder=TINY_WAN), _data(video_folder, frames=6))
    with pytest.raises(ConfigError, match="trains on clips"):
        trainer.fit(tiny_module(autoencoder=TINY_WAN), SampleDataModule(path=str(image_folder), resolution=32, batch_size=2, num_workers=0))
    with pytest.raises(ConfigError, match="reads images"):
        trainer.fit(tiny_module(), _data(video_folder))


def test_wan_tiny_from_the_command_line(tmp_path, video_folder):
    run = tmp_path / "run"
    tiny = ["--model.autoencoder.block_out_channels", "[8, 16, 16]", "--model.autoencoder.latent_channels", "4"]
    tiny += ["--model.autoencoder.architecture", "{temperal_downsample: [true, true]}", "--model.discriminator.base_channels", "8"]
    main(
        [
            "fit",
            "--config",
            "configs/wan-tiny.yaml",
            "--data.path",
            str(video_folder),
            "--data.resolution",
            "32",
            "--data.frames",
            "5",
            *tiny,
        ]  # the fixture videos have 9 frames
        + ["--trainer.max_steps", "3", "--model.loss.disc_start_step", "1", "--trainer.default_root_dir", str(run), "--data.num_workers", "0"]
    )
    reloaded = AutoencoderKLWan.from_pretrained(run / "diffusers")
    assert reloaded.config.z_dim == 4 and len(reloaded.config.latents_std) == 4
    assert any((run / "reconstructions").glob("*.png"))

    data = ["--data.path", str(video_folder), "--data.frames", "5", "--data.resolution", "32", "--data.num_workers", "0"]
    main(["eval", str(run / "diffusers"), *data, "--metrics", "psnr,ssim,rfvd", "--backbones", "random", "--out", str(tmp_path / "eval")])
    values = json.loads((tmp_path / "eval" / "metrics.json").read_text())[0]
    assert values["flicker"] > 0 and values["images"] == 8 and "image/gif" in (tmp_path / "eval" / "report.html").read_text()
    assert values["rfvd"] > 0  # a random I3D stand-in: plumbing only

    main(["recon", str(run / "diffusers"), str(video_folder), "--out", str(tmp_path / "recon")])
    for video in sorted(video_folder.glob("*.mp4")):  # every frame back, at the video's own size and rate
        original, rate = read_video(video)
        reconstruction, reconstruction_rate = read_video(tmp_path / "recon" / video.name)
        assert reconstruction.shape == original.shape == (9, 3, 40, 40) and reconstruction_rate == rate


def test_decoder_only_fine_tune_of_a_released_wan_vae_keeps_its_latent_space(tmp_path, video_folder):
    """wan-vae-finetune-decoder.yaml on a small randomly initialised Wan-architecture "release" (real
    weights cannot be downloaded here): the decoder learns, the encoder and so every latent stay as they
    were, and the export keeps the release's latents_mean / latents_std (what its diffusion model reads)."""
    torch.manual_seed(0)
    release = build_autoencoder(AutoencoderConfig(**TINY_WAN)).eval()
    release.register_to_config(latents_mean=[0.1, -0.2, 0.3, 0.0], latents_std=[1.5, 2.0, 0.5, 1.0])
    release.save_pretrained(tmp_path / "release" / "vae")
    run = tmp_path / "run"
    small = ["--data.path", str(video_folder), "--data.frames", "5", "--data.resolution", "32", "--data.batch_size", "2", "--data.num_workers", "0"]
    small += ["--model.loss.perceptual_backbone", "random", "--model.discriminator.base_channels", "8", "--model.discriminator.num_layers", "2"]
    small += ["--model.optimizer.generator.lr", "1e-3", "--model.ema.enabled", "false", "--trainer.val_check_interval", "2"]
    preset = ["--config", "configs/wan-vae-finetune-decoder.yaml", "--model.autoencoder.pretrained", str(tmp_path / "release")]
    main(["fit", *preset, *small, "--trainer.max_steps", "3", "--trainer.devices", "1", "--trainer.default_root_dir", str(run)])
    tuned = AutoencoderKLWan.from_pretrained(run / "diffusers").eval()
    weights, released = tuned.state_dict(), release.state_dict()
    frozen = [k for k in released if k.startswith(("encoder.", "quant_conv."))]
    assert frozen and all(torch.equal(weights[k], released[k]) for k in frozen)
    assert not torch.equal(weights["decoder.conv_out.weight"], released["decoder.conv_out.weight"])
    assert tuned.config.latents_mean == [0.1, -0.2, 0.3, 0.0] and tuned.config.latents_std == [1.5, 2.0, 0.5, 1.0]
    clips = torch.rand(1, 3, 5, 32, 32) * 2 - 1
    with torch.no_grad():
        assert torch.equal(tuned.encode(clips).latent_dist.mean, release.encode(clips).latent_dist.mean)


def test_the_3d_patchgan_judges_clips_within_its_reach_in_time():
    """kind patchgan3d: logits per frame and patch; with 2 layers (4 convolutions of temporal kernel 3) a
    change in frame 0 reaches the logits of frames 0-4 only, and a per-frame PatchGAN's of frame 0 only."""
    from vaetrain.models.discriminator import DiscriminatorConfig, build_discriminator

    torch.manual_seed(0)
    clips = torch.rand(2, 3, 8, 32, 32) * 2 - 1
    changed = clips.clone()
    changed[:, :, 0] += 0.5
    for kind, reach in (("patchgan3d", 5), ("patchgan", 1)):
        config = DiscriminatorConfig(kind=kind, base_channels=8, num_layers=2, norm="spectral")  # (group norm pools the clip's statistics)
        discriminator = build_discriminator(config).eval()
        with torch.no_grad():
            before, after = discriminator(clips), discriminator(changed)
        frames = before.shape[2] if kind == "patchgan3d" else 8
        difference = (before - after).abs()
        per_frame = difference.amax(dim=(0, 1, 3, 4)) if kind == "patchgan3d" else difference.unflatten(0, (2, 8)).amax(dim=(0, 2, 3, 4))
        assert frames == 8 and (per_frame[:reach] > 0).all() and (per_frame[reach:] == 0).all()


def test_the_memory_budget_probes_clip_steps(tmp_path, video_folder, monkeypatch):
    from itertools import count

    from tests.training.test_memory_budget import ChangeWatchingReader
    from vaetrain.training import memory_budget
    from vaetrain.training.memory_budget import MemoryBudget

    ticks = count()  # every probe step takes one tick whatever the machine's load: the larger micro-batch is faster
    monkeypatch.setattr(memory_budget.time, "perf_counter", lambda: float(next(ticks)))

    module = tiny_module(autoencoder=TINY_WAN, loss={"disc_start_step": 5}, discriminator={"kind": "patchgan3d"})
    reader = ChangeWatchingReader()
    budget = MemoryBudget(max_memory="8GB", reader=reader)
    tiny_trainer(tmp_path, max_steps=1, callbacks=[budget]).fit(module, _data(video_folder))
    assert reader.changed and all(all(changed.values()) for changed in reader.changed)
    assert budget.plan.micro_batch == 2


def test_hunyuan_video_tiny_from_the_command_line(tmp_path, video_folder):
    run = tmp_path / "run"
    tiny = ["--model.autoencoder.block_out_channels", "[8, 16, 16]", "--model.autoencoder.latent_channels", "4", "--model.autoencoder.norm_num_groups", "4"]
    main(
        ["fit", "--config", "configs/hunyuan-video-tiny.yaml", "--data.path", str(video_folder), "--data.resolution", "32", *tiny]
        + ["--model.discriminator.base_channels", "8", "--trainer.max_steps", "3", "--model.loss.disc_start_step", "1"]
        + ["--trainer.default_root_dir", str(run), "--data.num_workers", "0"]
    )
    reloaded = AutoencoderKLHunyuanVideo.from_pretrained(run / "diffusers")
    assert reloaded.config.latent_channels == 4 and reloaded.config.scaling_factor != 0.476986


def test_training_on_a_folder_with_bad_videos_counts_each_and_goes_on(tmp_path, video_folder):
    """A zero-byte file, a truncated mp4, a text file named .mp4 and a clip too short are each counted with
    their reason while training goes on; a lossless mkv (ffv1) and a gif are read like any video."""
    from PIL import Image

    from vaetrain.data import sample_images_dir
    from vaetrain.data.decoding.video import write_video

    from fixtures.camera_clips import camera_frames

    good = sorted(video_folder.glob("*.mp4"))
    (video_folder / "empty.mp4").write_bytes(b"")
    (video_folder / "notes.mp4").write_text("not a video")
    (video_folder / "truncated.mp4").write_bytes(good[0].read_bytes()[: good[0].stat().st_size // 3])
    frames = camera_frames(Image.open(sorted(sample_images_dir().glob("*.jpg"))[9]), 9, 40)
    write_video(video_folder / "short.mp4", frames[:3])
    write_video(video_folder / "lossless.mkv", frames, codec="ffv1")
    write_video(video_folder / "animated.gif", frames)
    data = SampleDataModule(path=str(video_folder), frames=5, resolution=32, batch_size=2, val_size=0, num_workers=0, max_bad_fraction=0.5)
    module = tiny_module(autoencoder=TINY_WAN)
    tiny_trainer(tmp_path, max_steps=12).fit(module, data)
    assert module.counters.generator_steps == 12 and data.tracker.seen == 24 + data.tracker.bad
    reasons = {reason.split(":")[0] for reason in data.tracker.reasons}
    assert reasons == {"empty file", "unreadable video", "too short"}
    assert {Path(name).name for name in data.tracker.examples} == {"empty.mp4", "notes.mp4", "truncated.mp4", "short.mp4"}


def test_joint_image_and_video_training_mixes_one_frame_clips_and_resumes_exactly(tmp_path, video_folder, image_folder):
    """data.image_ratio 0.5: every other micro-batch is images as one-frame clips (which ones: by the batch's
    number alone), and a resumed run reads exactly what an uninterrupted one read."""
    from vaetrain.data.streams.mixed import image_batches_before, is_image_batch

    assert [is_image_batch(n, 0.25) for n in range(8)] == [False, False, False, True] * 2 and image_batches_before(8, 0.25) == 2

    def data() -> SampleDataModule:
        return SampleDataModule(
            path=str(video_folder), frames=5, image_path=str(image_folder), image_ratio=0.5, resolution=32, batch_size=2, val_size=2, num_workers=0
        )

    loader = iter(data().train_dataloader())
    shapes = [tuple(next(loader)["pixels"].shape) for _ in range(4)]
    assert shapes == [(2, 3, 5, 32, 32), (2, 3, 1, 32, 32)] * 2

    def run(root: Path, max_steps: int, ckpt_path: str | None = None):
        module = tiny_module(autoencoder=TINY_WAN, loss={"disc_start_step": 1}, discriminator={"kind": "patchgan3d"})
        fit_with_checkpoints(root, module, data(), max_steps, ckpt_path=ckpt_path, every=3)
        return module

    straight = run(tmp_path / "straight", 6)
    run(tmp_path / "resumed", 3)
    resumed = run(tmp_path / "resumed", 6, ckpt_path=str(tmp_path / "resumed" / "last.ckpt"))
    for key, value in straight.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[key]), key
    with pytest.raises(ConfigError, match="together"):
        SampleDataModule(path=str(video_folder), frames=5, image_ratio=0.5, num_workers=0)


@pytest.mark.slow  # 8 s; the probe's own tests are in tests/evaluation
def test_the_probe_reads_video_latents_frame_by_frame(tmp_path, video_folder):
    torch.manual_seed(0)
    build_autoencoder(AutoencoderConfig(**TINY_WAN)).save_pretrained(tmp_path / "wan")
    data = ["--data.path", str(video_folder), "--data.frames", "5", "--data.resolution", "32", "--data.num_workers", "0"]
    probe = ["--probe-steps", "3", "--probe-samples", "4", "--probe-batch-size", "4", "--backbones", "random", "--out", str(tmp_path / "probe")]
    main(["probe", str(tmp_path / "wan"), *data, *probe])
    row = json.loads((tmp_path / "probe" / "probe.json").read_text())[0]  # latent frames (8 clips x 2) as the probe's images
    assert row["probe_latent_shape"] == [4, 8, 8] and row["probe_images"] == 16 and row["probe_fid"] is not None


def test_rfvd_of_clips_against_themselves_is_zero_and_grows_with_their_error():
    from vaetrain.evaluation.metric_networks import build_video_features

    torch.manual_seed(0)
    clips, noise = torch.rand(6, 3, 5, 32, 32) * 2 - 1, torch.rand(6, 3, 5, 32, 32) * 2 - 1
    values = []
    for reconstruction in (clips, (3 * clips + noise) / 4, (clips + noise) / 2):
        metrics = ReconstructionMetrics(fvd_features=build_video_features("random"))
        metrics.update(clips, reconstruction)
        values.append(metrics.compute()["rfvd"])
    assert abs(values[0]) < 1e-3 < values[1] < values[2]
    images = ReconstructionMetrics(fvd_features=build_video_features("random"))
    images.update(clips[:, :, 0], clips[:, :, 0])
    assert images.compute()["rfvd"] is None  # images have no rFVD


def test_joint_trainings_images_and_frame_folders_are_read_with_the_data_settings(tmp_path, video_folder):
    """data.background reaches the images mixed in (data.image_path) and the frames of frame folders: fully
    transparent pictures come out as the background, black here, not the default white."""
    from PIL import Image

    (tmp_path / "images").mkdir()
    (tmp_path / "frames" / "shot").mkdir(parents=True)
    for i in range(4):
        Image.new("RGBA", (40, 40), (200, 30, 30, 0)).save(tmp_path / "images" / f"{i}.png")
    for i in range(5):
        Image.new("RGBA", (40, 40), (200, 30, 30, 0)).save(tmp_path / "frames" / "shot" / f"{i:03d}.png")
    mixed = SampleDataModule(
        path=str(video_folder), frames=5, image_path=str(tmp_path / "images"), image_ratio=0.5, resolution=32, batch_size=2, background=(0, 0, 0), num_workers=0
    )
    image_batch = [b["pixels"] for _, b in zip(range(2), mixed.train_dataloader())][1]
    assert image_batch.shape == (2, 3, 1, 32, 32) and torch.all(image_batch == -1)
    frames = SampleDataModule(path=str(tmp_path / "frames"), frames=5, resolution=32, batch_size=1, val_size=0, background=(0, 0, 0), num_workers=0)
    frames.prepare_split()
    assert torch.all(next(iter(frames.samples("all", train=False)))["pixels"] == -1)


def test_rfvd_asked_of_images_is_refused_in_one_line(tmp_path, image_folder, capsys):
    from tests.conftest import tiny_diffusers_kl

    tiny_diffusers_kl().save_pretrained(tmp_path / "kl")
    images = ["--data.path", str(image_folder), "--data.resolution", "32"]
    code = main(["eval", str(tmp_path / "kl"), *images, "--metrics", "psnr,rfvd", "--out", str(tmp_path / "eval")])
    assert code == 2 and "--metrics rfvd measures clips" in capsys.readouterr().err and not (tmp_path / "eval").exists()
