"""The options every argparse command shares, and what they build: images (`--data.*`, from `vaetrain fit`'s own
data specification), tiling, and the diffusability/token probe.

The same thing has the same name everywhere: images are `--data.path` (with `--data.source`,
`--data.split`, `--data.image_column`, `--data.file_list`), `--data.resolution`, `--data.batch_size`,
`--data.num_workers`, built from the data module's signature and docstring (`IMAGE_KEYS`, so defaults and help
agree), and `--data.max_images`; a checkpoint's trained weights instead of its EMA are `--no-ema`; outputs of many
inputs are `--out`; devices are `--device`.
"""

from __future__ import annotations

import argparse
import inspect
import re
import sys
from typing import get_args

from vaetrain.checkpoints.references import check_model_reference, recorded_pixel_format
from vaetrain.data.datamodule import SampleDataModule
from vaetrain.data.decoding.pixels import PixelFormat
from vaetrain.data.decoding.video import clip_spec
from vaetrain.data.sample_sets import Loading, SampleSet, open_source
from vaetrain.data.sources.spec import SourceKind, SourceSpec
from vaetrain.evaluation.diffusability import run_probe as probe_models
from vaetrain.evaluation.diffusability_probe import ProbeConfig
from vaetrain.evaluation.stream import PRECISIONS
from vaetrain.evaluation.token_probe import TokenProbeConfig
from vaetrain.models.diffusion_transformer import SIZES
from vaetrain.training.precision import default_precision

MODEL_HELP = "vaetrain .ckpt, diffusers folder, LDM/SD .ckpt/.safetensors or Hub id"


def resolution_option(value: str) -> int | str:
    if value == "native":
        return value
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is neither a number of pixels nor 'native'") from None


IMAGE_KEYS = ("path", "source", "split", "image_column", "file_list", "resolution", "batch_size", "num_workers", "frames", "frame_stride")
"""The `data.*` keys of `vaetrain fit` that the other commands take, from the same specification: the data
module's signature (defaults) and its docstring (help)."""


def image_options(parser: argparse.ArgumentParser, *, path_help: str, resolution_help: str, max_images: int | None) -> None:
    parameters = inspect.signature(SampleDataModule.__init__).parameters
    helps = dict(re.findall(r"^\s+(\w+): (.+)$", SampleDataModule.__doc__.split("Args:")[1], flags=re.M))
    group = parser.add_argument_group("images (the keys of `vaetrain fit`'s data block, with its defaults)")
    for key in IMAGE_KEYS:
        kinds = {"resolution": resolution_option, "batch_size": int, "num_workers": int, "frames": int, "frame_stride": int}
        default, kind = parameters[key].default, kinds.get(key, str)
        extra = {"path": path_help, "resolution": resolution_help}
        options = {"choices": list(get_args(SourceKind))} if key == "source" else {}
        group.add_argument(
            f"--data.{key}",
            dest=f"data_{key}",
            type=kind,
            default=None if key in extra else default,
            help=extra[key] if key in extra else f"{helps[key]} (default {default})",
            **options,
        )
    group.add_argument("--data.max_images", dest="data_max_images", type=int, default=max_images, help="evenly spaced subset of the images")


def data_loading(args: argparse.Namespace) -> Loading:
    return Loading(args.data_batch_size, args.data_num_workers)


def sample_set(args: argparse.Namespace, resolution: int | str, models: list[str] = ()) -> SampleSet | None:
    """The images named on the command line, read as the first of `models` that records how (its pixel
    format: channels, bit depth, normalisation), else as 8-bit RGB. The models and the images are checked
    first, in one line each, before any network loads."""
    for model in models:
        check_model_reference(model)
    if args.data_path is None:
        return None
    clip = clip_spec(args.data_frames, args.data_frame_stride)
    spec = SourceSpec(args.data_path, args.data_source, args.data_split, args.data_image_column, args.data_file_list, videos=clip is not None)
    pixels = next((p for p in map(recorded_pixel_format, models) if p is not None), PixelFormat())
    open_source(spec).prepare()  # a missing folder, shard or split is a one-line error here
    return SampleSet(spec, resolution=resolution, pixels=pixels, clip=clip)


def tiling_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tile-size", type=int, default=512, help="images larger than this are encoded/decoded in tiles")
    parser.add_argument("--no-tiling", action="store_true")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--no-ema", action="store_true", help="a checkpoint's trained weights instead of its EMA")
    parser.add_argument(
        "--precision",
        choices=["auto", *PRECISIONS],
        default="auto",
        help="the autoencoder's precision: bf16 autocast or fp32 (default auto: what `vaetrain fit` picks, bf16 where the device computes it natively)",
    )


def resolve_precision(choice: str, device: str) -> str:
    """`--precision auto` as `fit` decides it for the device (`training.precision.default_precision`): "bf16" or "32"."""
    if choice != "auto":
        return choice
    return "bf16" if default_precision("cpu" if device == "cpu" else "auto") == "bf16-mixed" else "32"


def probe_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("diffusability probe")
    group.add_argument("--probe-steps", type=int, default=2000, help="training steps of the probe's diffusion model")
    group.add_argument("--probe-batch-size", type=int, default=32)
    group.add_argument("--probe-model-size", choices=sorted(SIZES), default="tiny")
    group.add_argument("--probe-samples", type=int, default=64, help="samples decoded for FID and the grid (0: none)")
    group.add_argument("--probe-seed", type=int, default=0)
    group.add_argument(
        "--probe-width", choices=["plain", "wide"], default="plain", help="wide: the transformer at least as wide as the latent's channels (RAE's 768)"
    )
    group.add_argument("--tokens", action="store_true", help="also the token probe of discrete models: a causal transformer on their code indices")
    group.add_argument("--token-steps", type=int, default=2000, help="training steps of the token probe's transformer")


def probe(args: argparse.Namespace, images) -> list[dict]:
    """The diffusability probe (and, with ``--tokens``, the token probe) of every model in ``args.models``
    (a checkpoint's trained weights with ``--no-ema``)."""
    config = ProbeConfig(
        model_size=args.probe_model_size,
        steps=args.probe_steps,
        batch_size=args.probe_batch_size,
        samples=args.probe_samples,
        seed=args.probe_seed,
        width=args.probe_width,
    )
    baseline = getattr(args, "baseline", None)
    return probe_models(
        [baseline, *args.models] if baseline else args.models,
        images,
        config,
        args.out,
        use_ema=not args.no_ema,
        max_images=args.data_max_images,
        inception=probe_inception(args.backbones),
        backbones=args.backbones,
        device=args.device,
        loading=data_loading(args),
        tokens=TokenProbeConfig(steps=args.token_steps, seed=args.probe_seed) if args.tokens else None,
        reconstruction=bool(baseline),
    )


def probe_inception(backbones: str):
    from vaetrain.errors import PretrainedWeightsUnavailable
    from vaetrain.evaluation.metric_networks import build_inception

    try:
        return build_inception(backbones)
    except PretrainedWeightsUnavailable as error:
        print(f"vaetrain probe: {error}; sample FID is left out", file=sys.stderr)
        return None
