"""`vaetrain recon` of a long real video in bounded memory (issue 32): the time and peak resident memory of a
280-frame video and of its 70-frame cut, one JSON line per run.

The video is real footage: SAM 2's `notebooks/videos/bedroom.mp4` (facebookresearch/sam2, Apache-2.0; 200
frames, 960x540, h264), brought by the `fetch` tool or any checkout of that repository and given as
`--source`. `--make` writes the benchmark's videos from it into `--out` (not committed): the 200 frames, then
backwards from the second-to-last (a ping-pong, so 280 frames of real motion), resized to each `--sizes`, and
the first `--frames` of that as the cuts. The model is a tiny Wan of `configs/wan-tiny.yaml`'s size with
random weights (seed 0; weights change neither the time nor the memory).

Each run is a child process (`recon`, pinned as given by `--pin`, one thread): its wall and CPU seconds and
its peak RSS (`ru_maxrss` of the child alone, whole process: Python, torch and the model included).

    python benchmarks/stream_recon.py --source sam2/notebooks/videos/bedroom.mp4 --make
    python benchmarks/stream_recon.py --sizes 320x180 640x360 --frames 70 280 --precision 32 bf16
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

WAN_TINY = {
    "family": "wan",
    "block_out_channels": [16, 32, 64, 64],
    "layers_per_block": 1,
    "latent_channels": 16,
    "architecture": {"temperal_downsample": [False, True, True]},
}
"""configs/wan-tiny.yaml's autoencoder."""


def make_videos(source: Path, out: Path, sizes: list[str], counts: list[int]) -> None:
    """OUT/bedroom-WxH-N.mp4 for each size and frame count: the source's frames forward then backward
    (ping-pong), resized (bicubic, by FFmpeg's scaler), the first N."""
    import av

    from vaetrain.data.decoding.video_writer import VideoWriter

    with av.open(str(source)) as container:
        frames = list(container.decode(container.streams.video[0]))
    frames = frames + frames[-2::-1]
    for size in sizes:
        width, height = map(int, size.split("x"))
        for count in counts:
            if count > len(frames):
                raise SystemExit(f"--frames {count}: the ping-pong of the source has {len(frames)} frames")
            with VideoWriter(out / f"bedroom-{size}-{count}.mp4", fps=30) as writer:
                for frame in frames[:count]:
                    writer.write(frame.reformat(width=width, height=height, format="rgb24", interpolation="BICUBIC").to_ndarray())
            print(f"wrote {out / f'bedroom-{size}-{count}.mp4'}", file=sys.stderr)


def make_model(folder: Path) -> None:
    import torch

    from vaetrain.models import AutoencoderConfig, build_autoencoder

    torch.manual_seed(0)
    build_autoencoder(AutoencoderConfig(**WAN_TINY)).save_pretrained(folder)


def child(args: list[str]) -> None:
    """Runs `vaetrain recon ARGS` in this process and prints its peak RSS and CPU seconds as JSON."""
    from vaetrain.cli import main

    start = time.process_time()
    code = main(["recon", *args])
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps({"rc": code, "peak_rss_mb": usage.ru_maxrss / 1024, "cpu_s": time.process_time() - start}))


def run(model: Path, video: Path, out: Path, precision: str, pin: str, tile: int) -> dict:
    command = ["taskset", "-c", pin] if pin else []
    command += [sys.executable, __file__, "--child", str(model), str(video), "--out", str(out), "--precision", precision, "--tile-size", str(tile)]
    environment = os.environ | {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, env=environment)
    seconds = time.perf_counter() - start
    if result.returncode:
        raise SystemExit(f"recon of {video} failed: {result.stderr.strip().splitlines()[-1:]}")
    measured = json.loads(result.stdout.strip().splitlines()[-1])
    return {"seconds": round(seconds, 1), "cpu_s": round(measured["cpu_s"], 1), "peak_rss_mb": round(measured["peak_rss_mb"], 1)}


def main() -> None:
    if sys.argv[1:2] == ["--child"]:
        child(sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", type=Path, help="SAM 2's notebooks/videos/bedroom.mp4 (with --make)")
    parser.add_argument("--make", action="store_true", help="write the videos and the model into --out, then stop")
    parser.add_argument("--out", type=Path, default=Path("runs/stream"))
    parser.add_argument("--sizes", nargs="+", default=["320x180", "640x360"])
    parser.add_argument("--frames", nargs="+", type=int, default=[70, 280])
    parser.add_argument("--precision", nargs="+", default=["32"], choices=["32", "bf16"])
    parser.add_argument("--pin", default="0", help="taskset CPU list of each run ('' : not pinned)")
    parser.add_argument("--tile-size", type=int, default=512)
    args = parser.parse_args()
    model = args.out / "wan-tiny-random"
    if args.make:
        if args.source is None:
            raise SystemExit("--make needs --source (SAM 2's notebooks/videos/bedroom.mp4)")
        make_videos(args.source, args.out, args.sizes, args.frames)
        make_model(model)
        return
    for size in args.sizes:
        for precision in args.precision:
            for count in args.frames:
                video = args.out / f"bedroom-{size}-{count}.mp4"
                if not video.is_file():
                    raise SystemExit(f"{video} does not exist: run with --source ... --make first")
                figures = run(model, video, args.out / "recon" / f"{size}-{count}-{precision}", precision, args.pin, args.tile_size)
                print(json.dumps({"frames": count, "size": size, "precision": precision, "tile": args.tile_size, "pin": args.pin} | figures), flush=True)


if __name__ == "__main__":
    main()
