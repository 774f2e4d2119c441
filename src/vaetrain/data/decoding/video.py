"""Video files and frame folders -> a clip of uint8 frames (T, 3, H, W), or `BadImage` with the reason.

Decoding goes through PyAV: its wheel carries the FFmpeg libraries, so `pip install` is the whole set-up on
every machine (torchcodec needs a system FFmpeg of a matching major version, which CI machines and most
clusters lack). A clip is `frames` frames taken every `stride`-th frame from a start drawn uniformly among
those that fit (torch's generator, so the resumable stream's per-position seed fixes it), or the first
frames when evaluating. The frame count is read by demuxing (packets, no decoding), then only the frames up
to the clip's end are decoded.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch

from vaetrain.data.decoding.decode import DEFAULT_MAX_PIXELS, BadImage, decode_image
from vaetrain.data.decoding.samples import IMAGE_TYPES, DecodeOptions, SampleDecoder
from vaetrain.data.decoding.transforms import CropPolicy, clip_transform
from vaetrain.data.decoding.video_writer import write_video
from vaetrain.errors import ConfigError

__all__ = ["VIDEO_TYPES", "ClipDecoder", "ClipSpec", "VideoFrames", "read_clip", "read_video", "video_frames", "write_video"]

VIDEO_TYPES = ("mp4", "webm", "mov", "mkv", "avi", "gif")
"""Video containers read as clips (file extensions and WebDataset keys)."""


@dataclass(frozen=True)
class ClipSpec:
    """Which frames of a video make one training clip."""

    frames: int
    """Frames per clip (Wan's causal encoder: 1 + 4k)."""
    stride: int = 1
    """Take every stride-th frame of the video (2 halves its frame rate)."""

    def __post_init__(self) -> None:
        if self.frames < 1 or self.stride < 1:
            raise ConfigError(f"data.frames ({self.frames}) and data.frame_stride ({self.stride}) must be at least 1")

    @property
    def span(self) -> int:
        """Frames of the video one clip covers."""
        return (self.frames - 1) * self.stride + 1


def clip_spec(frames: int, stride: int = 1) -> ClipSpec | None:
    """`data.frames` / `data.frame_stride` as a `ClipSpec` (None: images); a stride without frames is refused."""
    if not frames:
        if stride != 1:
            raise ConfigError(f"data.frame_stride={stride} applies to clips; set data.frames too")
        return None
    return ClipSpec(frames, stride)


def check_video_settings(clip: ClipSpec | None, buckets, schedule, pixels, image_path: str | None = None, image_ratio: float = 0.0) -> None:
    """Settings the clip decoder does not honour are refused (one line) rather than ignored."""
    if not 0 <= image_ratio < 1:
        raise ConfigError(f"data.image_ratio must be in [0, 1), got {image_ratio}")
    if (image_ratio > 0) != (image_path is not None) or (image_ratio > 0 and clip is None):
        raise ConfigError("joint image + video training needs data.frames, data.image_path and data.image_ratio > 0 together")
    if clip is None:
        return
    for key, value in (("data.buckets", buckets), ("data.resolution_schedule", schedule)):
        if value:
            raise ConfigError(f"{key} is not supported with data.frames (video clips are square crops at data.resolution)")
    if not pixels.is_rgb8:
        raise ConfigError("data.frames: videos are read as 8-bit RGB; leave data.channels, bit_depth and normalization at their defaults")


def read_clip(
    source: bytes | Path, clip: ClipSpec, *, random_start: bool, max_pixels: int = DEFAULT_MAX_PIXELS, background: tuple[int, int, int] = (255, 255, 255)
) -> torch.Tensor:
    """The clip's frames as uint8 (T, 3, H, W); a folder is a video of its sorted image files (transparent
    frames composited on `background`)."""
    if isinstance(source, Path) and source.is_dir():
        return _frame_folder(source, clip, random_start, max_pixels, background)
    with _opened(source) as (container, stream):
        return _decode(container, stream, clip, random_start, max_pixels)


def read_video(path: Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[torch.Tensor, Fraction]:
    """Every frame of a video file or frame folder, uint8 (T, 3, H, W), and its frame rate (8 for folders)."""
    if path.is_dir():
        return _frame_folder(path, None, False, max_pixels), FOLDER_RATE
    with _opened(path) as (container, stream):
        return _decode(container, stream, None, False, max_pixels), _rate(stream)


FOLDER_RATE = Fraction(8)
"""The frame rate of a folder of frames (which records none)."""


def _rate(stream) -> Fraction:
    """The container's frame rate as it states it (30000/1001 stays NTSC's 29.97...; a writer given it plays the
    frames at the same speed)."""
    return Fraction(stream.average_rate or stream.guessed_rate or FOLDER_RATE)


@dataclass
class VideoFrames:
    """A video read on demand: `frames` yields uint8 (3, H, W) frames one at a time, decoded as they are
    asked for; `count` is the number of frames the container holds (demuxed packets: an estimate for progress)."""

    frames: Iterator[torch.Tensor]
    count: int
    rate: Fraction


@contextmanager
def video_frames(path: Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> Iterator[VideoFrames]:
    """A video file or frame folder as a `VideoFrames`, open for the `with` block; no more than one decoded
    frame is held at a time (a 280-frame 720p video is never whole in memory). Errors become `BadImage`."""
    if path.is_dir():
        files = frame_files(path)
        yield VideoFrames(_folder_frames(files, max_pixels), len(files), FOLDER_RATE)
        return
    with _opened(path) as (container, stream):
        count = sum(1 for packet in container.demux(stream) if packet.size)
        container.seek(0)
        yield VideoFrames(_container_frames(container, stream, max_pixels), count, _rate(stream))


def _container_frames(container, stream, max_pixels: int) -> Iterator[torch.Tensor]:
    for frame in container.decode(stream):
        if frame.width * frame.height > max_pixels:
            raise BadImage(f"frames of {frame.width}x{frame.height} pixels exceed the limit of {max_pixels}")
        yield torch.from_numpy(frame.to_ndarray(format="rgb24")).permute(2, 0, 1)


def _folder_frames(files: list[Path], max_pixels: int) -> Iterator[torch.Tensor]:
    size = None
    for file in files:
        frame = torch.from_numpy(np.asarray(decode_image(file, max_pixels=max_pixels))).permute(2, 0, 1)
        if size is not None and frame.shape != size:
            raise BadImage(f"frame folder with frames of different sizes ({tuple(size)}, {tuple(frame.shape)} at {file.name})")
        size = frame.shape
        yield frame


def frame_files(folder: Path) -> list[Path]:
    """A frame folder's frames: its image files in name order."""
    return sorted(p for p in folder.iterdir() if p.suffix.lower().lstrip(".") in IMAGE_TYPES and p.is_file())


@contextmanager
def _opened(source: bytes | Path):
    """(container, its video stream); whatever FFmpeg raises while it is read becomes `BadImage`."""
    if (len(source) if isinstance(source, bytes) else source.stat().st_size) == 0:
        raise BadImage("empty file")
    import av

    try:
        with av.open(io.BytesIO(source) if isinstance(source, bytes) else str(source)) as container:
            yield container, _video_stream(container)
    except av.error.FFmpegError as error:
        raise BadImage(f"unreadable video ({error})") from error
    except av.codec.codec.UnknownCodecError as error:
        raise BadImage(f"unsupported codec ({error})") from error


def _decode(container, stream, clip: ClipSpec | None, random_start: bool, max_pixels: int) -> torch.Tensor:
    """The frames of `clip` (None: every frame): counted by demuxing, then decoded up to the clip's end."""
    total = sum(1 for packet in container.demux(stream) if packet.size)
    clip = clip or ClipSpec(max(total, 1))
    start = _start(total, clip, random_start)
    container.seek(0)
    wanted = set(range(start, start + clip.span, clip.stride))
    frames = []
    for index, frame in enumerate(container.decode(stream)):
        if index in wanted:
            if frame.width * frame.height > max_pixels:
                raise BadImage(f"frames of {frame.width}x{frame.height} pixels exceed the limit of {max_pixels}")
            frames.append(frame.to_ndarray(format="rgb24"))
        if len(frames) == clip.frames:
            break
    if len(frames) < clip.frames:
        raise BadImage(f"too short: {len(frames)} decodable frames from the clip's start, a clip needs {clip.frames} at stride {clip.stride}")
    return torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).contiguous()


def _video_stream(container):
    streams = container.streams.video
    if not streams:
        raise BadImage("no video stream")
    if streams[0].codec_context is None:
        raise BadImage("unsupported codec (no decoder)")
    return streams[0]


def _start(total: int, clip: ClipSpec, random_start: bool) -> int:
    if total < clip.span:
        raise BadImage(f"too short: {total} frames, a clip needs {clip.span} ({clip.frames} frames at stride {clip.stride})")
    return int(torch.randint(0, total - clip.span + 1, ())) if random_start else 0


def _frame_folder(folder: Path, clip: ClipSpec | None, random_start: bool, max_pixels: int, background: tuple[int, int, int] = (255, 255, 255)) -> torch.Tensor:
    files = frame_files(folder)
    clip = clip or ClipSpec(max(len(files), 1))
    start = _start(len(files), clip, random_start)
    frames = [np.asarray(decode_image(f, max_pixels=max_pixels, background=background)) for f in files[start : start + clip.span : clip.stride]]
    if len({f.shape for f in frames}) > 1:
        raise BadImage(f"frame folder with frames of different sizes ({sorted({f.shape[:2] for f in frames})})")
    return torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).contiguous()


class ClipDecoder(SampleDecoder):
    """A `SampleDecoder` whose samples are clips: (video bytes, path or frame folder, name) ->
    {"pixels": float (3, T, H, W) in [-1, 1], ...}, every frame cropped and flipped alike."""

    types = VIDEO_TYPES

    def __init__(
        self,
        clip: ClipSpec,
        resolution: int,
        *,
        train: bool,
        crop: CropPolicy = "random_crop",
        flip: bool = True,
        background: tuple[int, int, int] = (255, 255, 255),
        max_pixels: int = DEFAULT_MAX_PIXELS,
    ):
        super().__init__(clip_transform(resolution, train=train, flip=flip, crop=crop), DecodeOptions(background=background, max_pixels=max_pixels))
        self.clip, self.random_start = clip, train

    def read(self, data: bytes | Path) -> torch.Tensor:
        options = self.options
        return read_clip(data, self.clip, random_start=self.random_start, max_pixels=options.max_pixels, background=options.background)
