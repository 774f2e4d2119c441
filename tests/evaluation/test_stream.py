"""Videos streamed chunk by chunk through a causal video autoencoder: the same reconstruction as one pass
over the whole clip (float tolerance), in space tiles too, and read and written frame by frame."""

from fractions import Fraction

import av
import numpy as np
import pytest
import torch

from tests.conftest import TINY_WAN, write_camera_videos_of_samples
from vaetrain.data.decoding.video import read_video, video_frames
from vaetrain.errors import LongerThanTrained
from vaetrain.evaluation.recon import reconstruct_files
from vaetrain.evaluation.reconstruct import TilingConfig, encode_decode, tiled
from vaetrain.evaluation.stream import frame_groups, streamed_encode_decode
from vaetrain.models import AutoencoderConfig, build_autoencoder
from vaetrain.models.families.wan_chunks import WanChunks


def _wan():
    torch.manual_seed(0)
    return build_autoencoder(AutoencoderConfig(**TINY_WAN)).eval()


def _clip(frames: int, side: int = 16, seed: int = 1) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(1, 3, frames, side, side, generator=generator) * 2 - 1


@pytest.mark.parametrize("frames", [1, 5, 9, 17, 33])
def test_streamed_reconstruction_equals_one_pass(frames):
    model, clip = _wan(), _clip(frames)
    with torch.no_grad():
        whole_posterior, whole = encode_decode(model, clip, TilingConfig(enabled=False))
        posterior, streamed = streamed_encode_decode(model, clip)
    assert streamed.shape == whole.shape == clip.shape
    assert torch.allclose(streamed, whole, atol=1e-5), (streamed - whole).abs().max()
    assert torch.allclose(posterior.mean, whole_posterior.mean, atol=1e-5)
    assert torch.allclose(posterior.logvar, whole_posterior.logvar, atol=1e-5)


@pytest.mark.parametrize("frames", [5, 9])
def test_streamed_reconstruction_in_space_tiles_equals_diffusers_tiled_one_pass(frames):
    """24 px frames in 16 px tiles (overlap 4 px): 2 x 2 tiles per chunk, each with caches of its own."""
    model, clip, tiling = _wan(), _clip(frames, side=24), TilingConfig(tile_size=16)
    with torch.no_grad():
        whole = encode_decode(model, clip, tiling)[1]
        streamed = streamed_encode_decode(model, clip, tiling)[1]
        untiled = encode_decode(model, clip, TilingConfig(enabled=False))[1]
    assert torch.allclose(streamed, whole, atol=1e-5), (streamed - whole).abs().max()
    assert not torch.allclose(untiled, whole, atol=1e-3)  # the tiles did change the computation
    with tiled(model, tiling):
        assert model.use_tiling
    assert not model.use_tiling  # restored


def test_frame_groups_are_the_first_frame_then_chunks_with_the_last_one_filled_up():
    frames = [torch.full((1, 2, 2), float(i)) for i in range(7)]
    groups = list(frame_groups(frames, 4))
    assert [(g[:, 0, 0, 0].tolist(), real) for g, real in groups] == [([0.0], 1), ([1.0, 2.0, 3.0, 4.0], 4), ([5.0, 6.0, 6.0, 6.0], 2)]


def test_a_video_is_read_frame_by_frame_as_read_whole(tmp_path):
    video = write_camera_videos_of_samples(tmp_path, 1, frames=7, size=24)[0]
    whole, rate = read_video(video)
    with video_frames(video) as streamed:
        frames = torch.stack(list(streamed.frames))
        assert streamed.count == 7 and streamed.rate == rate
    assert torch.equal(frames, whole)


def test_recon_writes_the_one_pass_reconstruction_frame_by_frame(tmp_path, monkeypatch):
    """What `recon` hands its video writer, frame after frame as each chunk is decoded: the one-pass
    reconstruction of the decoded video (10 frames: not 1 + 4k, the last chunk filled up and cut back)."""
    import vaetrain.evaluation.recon as recon

    video = write_camera_videos_of_samples(tmp_path / "in", 1, frames=10, size=24)[0]
    written_frames = []
    monkeypatch.setattr(recon.VideoWriter, "write", lambda self, frame: written_frames.append(frame.copy()))
    model = _wan()
    written, bad = reconstruct_files(model, [str(video)], tmp_path / "out", device="cpu", progress=_silent)
    assert written == 1 and not bad
    original, _ = read_video(video)
    padded = torch.cat([original, original[-1:].expand(3, -1, -1, -1)])
    with torch.no_grad():
        whole = encode_decode(model, padded.permute(1, 0, 2, 3).unsqueeze(0).float() / 127.5 - 1)[1][:, :, :10]
    expected = ((whole[0].permute(1, 2, 3, 0) + 1) * 127.5).round().clamp(0, 255).numpy()
    assert len(written_frames) == 10
    assert np.abs(np.stack(written_frames).astype(float) - expected).max() <= 1  # rounding of float noise


def test_a_video_longer_than_the_trained_clips_is_warned_of_once(tmp_path):
    videos = write_camera_videos_of_samples(tmp_path / "in", 2, frames=9, size=16)
    with pytest.warns(LongerThanTrained) as caught:
        reconstruct_files(_wan(), [str(tmp_path / "in")], tmp_path / "out", device="cpu", progress=_silent, longest_clip=5)
    assert len([w for w in caught if w.category is LongerThanTrained]) == 1 and len(videos) == 2


def test_a_video_no_longer_than_the_trained_clips_is_not_warned_of(tmp_path, recwarn):
    write_camera_videos_of_samples(tmp_path / "in", 1, frames=9, size=16)
    reconstruct_files(_wan(), [str(tmp_path / "in")], tmp_path / "out", device="cpu", progress=_silent, longest_clip=9)
    assert not [w for w in recwarn if w.category is LongerThanTrained]


class _Silent:
    def update(self, n=1):
        pass

    def close(self):
        pass


def _silent(total, label, unit):
    return _Silent()


class _Redrawing(_Silent):
    def update(self, n=1):
        return True  # what tqdm's update returns when it redraws


def test_a_bar_that_redraws_on_every_call_leaves_the_reconstruction_alone(tmp_path):
    """The chunk counter is a forward hook; tqdm's `update` returns True when it redraws, which a hook
    returning it would put in place of the decoder's output."""
    video = write_camera_videos_of_samples(tmp_path / "in", 1, frames=5, size=16)[0]
    written, bad = reconstruct_files(_wan(), [str(video)], tmp_path / "out", device="cpu", progress=lambda *_: _Redrawing())
    assert written == 1 and not bad
    assert read_video(tmp_path / "out" / video.name)[0].shape == (5, 3, 16, 16)


def _silent(total, label, unit):
    class Silent:
        def update(self, n=1):
            pass

        def close(self):
            pass

    return Silent()


@pytest.mark.parametrize("rate", [Fraction(25, 2), Fraction(30000, 1001)])
def test_recon_keeps_the_videos_own_frame_rate(tmp_path, rate):
    """12.5 fps stays 12.5 and NTSC's 30000/1001 stays 29.97 (rounding played them 4 % / 0.1 % off)."""
    with av.open(str(tmp_path / "v.mp4"), "w") as container:
        stream = container.add_stream("libx264", rate=rate)
        stream.width, stream.height, stream.pix_fmt = 16, 16, "yuv420p"
        for t in range(6):
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.full((16, 16, 3), 20 * t, np.uint8), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    written, bad = reconstruct_files(_wan(), [str(tmp_path / "v.mp4")], tmp_path / "out", device="cpu", progress=_silent)
    assert written == 1 and not bad
    with av.open(str(tmp_path / "out" / "v.mp4")) as container:
        assert container.streams.video[0].average_rate == rate


def test_wan_chunks_refuses_chunks_diffusers_never_encodes():
    """The first frame alone, then 4 at a time: a first chunk of 5 would come back uncompressed in time, a
    later chunk of 2 fail inside a convolution; both are refused in one line."""
    model, clip = _wan(), _clip(9)
    with torch.no_grad(), pytest.raises(ValueError, match="first frame alone"):
        WanChunks(model).encode(clip[:, :, :5])
    stream = WanChunks(model)
    with torch.no_grad():
        stream.encode(clip[:, :, :1])
        with pytest.raises(ValueError, match="got 2 frames after 1"):
            stream.encode(clip[:, :, 1:3])


def test_precision_is_honoured_and_auto_is_fits_choice(monkeypatch):
    """`--precision bf16` runs the chunks under bf16 autocast (a different, close reconstruction), "32" in fp32
    (the one-pass one exactly); `auto` resolves as `fit` picks for the device."""
    from vaetrain.cli import options

    model, clip = _wan(), _clip(9)
    with torch.no_grad():
        _, one_pass = encode_decode(model, clip)
        _, fp32 = streamed_encode_decode(model, clip, precision="32")
        _, bf16 = streamed_encode_decode(model, clip, precision="bf16")
    assert torch.allclose(fp32, one_pass, atol=1e-5)
    assert not torch.equal(bf16, fp32) and (bf16 - fp32).abs().mean() < 0.05
    for fit_picks, expected in (("bf16-mixed", "bf16"), ("32-true", "32")):
        monkeypatch.setattr(options, "default_precision", lambda device, picks=fit_picks: picks)
        assert options.resolve_precision("auto", "cpu") == expected
    assert options.resolve_precision("32", "cpu") == "32"
