"""The video families at clip lengths that cross their thresholds: Wan's decoder caches one frame of the
first chunk, then two (chunks after the second: 9 frames and more); diffusers' HunyuanVideo tiles in time
above 16 frames in (4 latent frames), which training switches off (one pass), recon and eval keep."""

import pytest
import torch
from diffusers import AutoencoderKLHunyuanVideo

from tests.conftest import TINY_HUNYUAN, TINY_WAN, tiny_module
from vaetrain.evaluation.reconstruct import reconstruct
from vaetrain.models import AutoencoderConfig
from vaetrain.models.autoencoder import autoencoder_from_state, build_autoencoder
from vaetrain.models.families import decode, encode, family_of
from vaetrain.models.last_layers import LastLayerInput
from vaetrain.training.engines import PlainEngine

FAMILIES = {"wan": TINY_WAN, "hunyuan": TINY_HUNYUAN}


@pytest.mark.parametrize(("name", "frames"), [("wan", 1), ("wan", 5), ("wan", 17), ("hunyuan", 1), ("hunyuan", 17), ("hunyuan", 33)])
def test_the_last_layer_gradient_is_autograds_over_the_whole_clip(name, frames):
    """The weight gradient the adaptive weight reads equals autograd's through the decoder over the whole
    clip (test_video.py checks 9 frames); HunyuanVideo's encoder and decoder each run once on the whole clip
    (no time tiles blended)."""
    torch.manual_seed(0)
    model = build_autoencoder(AutoencoderConfig(**FAMILIES[name]))
    recorder = LastLayerInput(model)
    clips = torch.rand(1, 3, frames, 16, 16) * 2 - 1
    latents = encode(model, clips).mean
    reconstruction = decode(model, latents)
    assert latents.shape[2] == 1 + (frames - 1) // 4 and reconstruction.shape == clips.shape
    if name == "hunyuan":
        with torch.no_grad():
            assert torch.equal(latents, model.quant_conv(model.encoder(clips))[:, : latents.shape[1]])
            assert torch.equal(reconstruction, model.decoder(model.post_quant_conv(latents)))
    gradient = torch.randn_like(reconstruction)
    (expected,) = torch.autograd.grad((reconstruction * gradient).sum(), family_of(model).last_conv(model).weight)
    assert torch.allclose(recorder.take_weight_gradient()(gradient), expected, rtol=1e-4, atol=1e-4 * expected.abs().max().item())


@pytest.mark.parametrize("frames", [17, 33])
def test_hunyuan_video_trains_long_clips_in_one_pass_and_reconstructs_them_in_diffusers_tiles(frames):
    """A GAN step with LDM's adaptive weight (through the decoder's last convolution, over the whole clip);
    the model read back from the trained weights (what recon, eval and the export load) tiles in time as
    diffusers does by default, and so differs from the one-pass reconstruction trained."""
    torch.manual_seed(0)
    loss = {"disc_start_step": 0, "perceptual_weight": 0.0}
    module = tiny_module(autoencoder=TINY_HUNYUAN, loss=loss, discriminator={"kind": "patchgan3d"}, ema={"enabled": False})
    step, before = module.gan_step, [p.detach().clone() for p in module.autoencoder.parameters()]
    networks = {"generator": module.autoencoder, "discriminator": module.discriminator}
    optimizers = {name: torch.optim.SGD(network.parameters(), lr=1e-3) for name, network in networks.items()}
    clips = torch.rand(1, 3, frames, 16, 16) * 2 - 1
    logs = step(clips, PlainEngine(step, optimizers))
    assert step.counters.generator_steps == step.counters.discriminator_steps == 1
    assert torch.isfinite(logs["train/adaptive_weight"]) and logs["train/adaptive_weight"] > 0
    assert any(not torch.equal(b, p) for b, p in zip(before, module.autoencoder.parameters()))

    trained = module.autoencoder.eval()
    reloaded = autoencoder_from_state(dict(trained.config), module.full_inference_state_dict())
    default = AutoencoderKLHunyuanVideo.from_config(reloaded.config).eval()  # diffusers' defaults: tiles in time
    default.load_state_dict(reloaded.state_dict())
    with torch.no_grad():
        tiled, one_pass = reconstruct(reloaded, clips), reconstruct(trained, clips)
        assert torch.equal(tiled, default(clips).sample)
        assert not torch.allclose(tiled, one_pass, atol=1e-5)
