"""Writing videos frame by frame with PyAV: `VideoWriter` takes each frame as it comes (nothing is held but the
encoder's own buffers), and the file appears under its name only once it is complete."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np


class VideoWriter:
    """`with VideoWriter(path, fps=...) as writer: writer.write(frame)` for uint8 (H, W, 3) frames; the container
    from the suffix (`gif` for .gif files), the size from the first frame. Written to a hidden partial file,
    renamed to `path` when the block ends without an error (removed when it ends with one)."""

    def __init__(self, path: str | Path, *, fps: int | Fraction = 8, codec: str = "mpeg4") -> None:
        self.path, self.fps, self.codec = Path(path), fps, codec
        self.partial = self.path.with_name(f".{self.path.stem}.partial{self.path.suffix}")
        self.container = self.stream = None

    def __enter__(self) -> VideoWriter:
        import av

        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.container = av.open(str(self.partial), "w")
        return self

    def write(self, array: np.ndarray) -> None:
        import av

        if self.stream is None:
            gif = self.path.suffix == ".gif"
            self.stream = self.container.add_stream("gif" if gif else self.codec, rate=Fraction(self.fps))
            self.stream.height, self.stream.width = array.shape[:2]
            if not gif:
                self.stream.bit_rate = 4_000_000  # near-lossless at these sizes: the clip shows the photo, not codec blocks
            self.stream.pix_fmt = "rgb8" if gif else ("yuv420p" if self.codec in ("mpeg4", "h264", "libx264", "libvpx-vp9") else self.stream.pix_fmt)
        for packet in self.stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(array), format="rgb24")):
            self.container.mux(packet)

    def __exit__(self, kind, error, traceback) -> None:
        try:
            if error is None and self.stream is not None:
                for packet in self.stream.encode():
                    self.container.mux(packet)
        finally:
            self.container.close()
        if error is None and self.stream is not None:
            self.partial.replace(self.path)
        else:
            self.partial.unlink(missing_ok=True)


def write_video(path: str | Path, frames: list[np.ndarray], *, fps: int | Fraction = 8, codec: str = "mpeg4") -> Path:
    """Encodes uint8 (H, W, 3) frames with PyAV (container from the suffix; `gif` for .gif files)."""
    with VideoWriter(path, fps=fps, codec=codec) as writer:
        for array in frames:
            writer.write(array)
    return Path(path)
