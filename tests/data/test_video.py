"""Video clips: every frame cut alike, starts drawn from the stream's seed, frame folders read exactly, and
every unusable video counted with its reason."""

import numpy as np
import pytest
import torch
from PIL import Image

from tests.conftest import write_camera_videos_of_samples
from vaetrain.data import SampleDataModule, sample_images_dir
from vaetrain.data.decoding.video import ClipDecoder, ClipSpec, read_clip, write_video
from vaetrain.errors import ConfigError

from fixtures.camera_clips import camera_frames


def test_every_frame_of_a_clip_gets_the_same_crop_and_flip(tmp_path):
    photo = sorted(sample_images_dir().glob("*.jpg"))[0]
    still = np.asarray(Image.open(photo).convert("RGB").resize((60, 48)))
    write_video(tmp_path / "still.mp4", [still] * 9, codec="ffv1")  # lossless: every frame the same pixels
    decoder = ClipDecoder(ClipSpec(5, stride=2), 32, train=True)
    crops = set()
    for seed in range(6):
        torch.manual_seed(seed)
        clip = decoder(tmp_path / "still.mp4", "still")["pixels"]
        assert clip.shape == (3, 5, 32, 32) and -1 <= clip.min() and clip.max() <= 1
        assert all(torch.equal(clip[:, 0], clip[:, t]) for t in range(1, 5))
        crops.add(clip[:, 0].sum().item())
    assert len(crops) > 1  # the crop (and flip) do change from draw to draw


def test_a_clip_starts_where_the_seed_says_and_evaluation_reads_the_first_frames(tmp_path):
    frames = [np.full((16, 16, 3), 10 * i, dtype=np.uint8) for i in range(12)]  # frame i is gray level 10 i
    for i, frame in enumerate(frames):
        (tmp_path / "frames").mkdir(exist_ok=True)
        Image.fromarray(frame).save(tmp_path / "frames" / f"{i:04d}.png")
    write_video(tmp_path / "ramp.mkv", frames, codec="ffv1")
    clip = ClipSpec(4, stride=3)  # spans 10 of the 12 frames: starts 0, 1 or 2
    for source in (tmp_path / "frames", tmp_path / "ramp.mkv"):
        first = read_clip(source, clip, random_start=False)
        assert first.shape == (4, 3, 16, 16) and (first[:, 0, 0, 0] / 10).round().tolist() == [0, 3, 6, 9]  # (YUV rounding)
        starts = set()
        for seed in range(12):
            torch.manual_seed(seed)
            again = read_clip(source, clip, random_start=True)
            torch.manual_seed(seed)
            assert torch.equal(again, read_clip(source, clip, random_start=True))
            starts.add(round(int(again[0, 0, 0, 0]) / 10))
        assert starts == {0, 1, 2}


def test_unusable_videos_are_counted_each_with_its_reason(tmp_path):
    folder = tmp_path / "videos"
    good = write_camera_videos_of_samples(folder, 2, frames=9, size=32)
    (folder / "empty.mp4").write_bytes(b"")
    (folder / "notes.mp4").write_text("not a video at all")
    (folder / "truncated.mp4").write_bytes(good[0].read_bytes()[: good[0].stat().st_size // 3])
    frames = camera_frames(Image.open(sorted(sample_images_dir().glob("*.jpg"))[3]), 9, 32)
    write_video(folder / "short.mp4", frames[:3])
    write_video(folder / "lossless.mkv", frames, codec="ffv1")  # unusual codecs decode like any other
    write_video(folder / "animated.gif", frames)
    for i, frame in enumerate(frames):
        (folder / "frames" / "shot").mkdir(parents=True, exist_ok=True)
        Image.fromarray(frame).save(folder / "frames" / "shot" / f"{i:03d}.jpg")
    data = SampleDataModule(path=str(folder), frames=5, resolution=32, batch_size=2, val_size=0, num_workers=0)
    data.prepare_split()
    usable, bad = data.source.keep_usable("train", data.decoder(train=False))
    reasons = {name.split("/")[-1]: reason for name, reason in bad}
    assert usable == 5  # two mp4s, the mkv, the gif, the frame folder
    assert set(reasons) == {"empty.mp4", "notes.mp4", "truncated.mp4", "short.mp4"}
    assert reasons["empty.mp4"] == "empty file" and reasons["short.mp4"].startswith("too short: 3 frames")
    assert all(reasons[n].startswith("unreadable video") for n in ("notes.mp4", "truncated.mp4"))


def test_video_settings_that_cannot_apply_are_refused(tmp_path, video_folder):
    with pytest.raises(ConfigError, match="data.buckets"):
        SampleDataModule(path=str(video_folder), frames=5, buckets=[(32, 48)], num_workers=0)
    with pytest.raises(ConfigError, match="data.frame_stride=2 applies to clips"):
        SampleDataModule(path=str(video_folder), frame_stride=2, num_workers=0)
    with pytest.raises(ConfigError, match="8-bit RGB"):
        SampleDataModule(path=str(video_folder), frames=5, channels=1, num_workers=0)
    with pytest.raises(ConfigError, match="no videos"):
        SampleDataModule(path=str(tmp_path / "nothing"), frames=5, num_workers=0).prepare_split() if (tmp_path / "nothing").mkdir() is None else None


def test_webdataset_shards_of_videos_give_clips(tmp_path):
    import io
    import tarfile

    videos = write_camera_videos_of_samples(tmp_path / "videos", 3, frames=9, size=32)
    (tmp_path / "shards").mkdir()
    with tarfile.open(tmp_path / "shards" / "shard-00000.tar", "w") as tar:
        for i, video in enumerate(videos + [tmp_path / "videos" / "broken.mp4"]):
            data = video.read_bytes() if video.exists() else b"not a video"
            info = tarfile.TarInfo(f"{i:04d}.mp4")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    data = SampleDataModule(path=str(tmp_path / "shards" / "shard-{00000..00000}.tar"), frames=5, resolution=32, val_size=0, num_workers=0)
    data.prepare_split()
    samples = list(data.samples("train", train=False))
    clips = [s["pixels"] for s in samples if s["pixels"] is not None]
    assert len(clips) == 3 and all(c.shape == (3, 5, 32, 32) for c in clips)
    assert [reason for s in samples for _, reason in s["bad"]][0].startswith("unreadable video")
