"""`vaetrain fit|validate` (LightningCLI: YAML presets, every key overridable); `export`, `convert`, `eval` and
`recon` are plain functions behind argparse."""

from __future__ import annotations

import argparse
import os
import sys

from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from vaetrain.data.datamodule import ImageDataModule
from vaetrain.errors import ConfigError
from vaetrain.export import diffusers_to_ldm, export_checkpoint, load_autoencoder, save_diffusers_folder, write_ldm_checkpoint
from vaetrain.training.callbacks import ExportDiffusers, ReconstructionGrid
from vaetrain.training.memory_budget import MemoryBudget
from vaetrain.training.module import AutoencoderModule
from vaetrain.training.precision import default_precision


def _checkpoint_dir(root: str | None) -> str:
    return os.path.join(root or ".", "checkpoints")


# The plain names a user would type, mapped to the strategies this module needs: DDP must find unused
# parameters (each optimizer's step leaves the other network without gradients), and FSDP is FSDP2
# (Lightning's `fsdp` is FSDP1: CUDA-only, flat parameters; see vaetrain.training.sharding).
STRATEGY_ALIASES = {"ddp": "ddp_find_unused_parameters_true", "fsdp": "fsdp2"}


class VaetrainCLI(LightningCLI):
    """Adds the always-on callbacks as config blocks: `checkpoint`, `grid`, `export`, `memory`."""

    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        return {"fit": {"model", "train_dataloaders", "val_dataloaders", "datamodule"}, "validate": {"model", "dataloaders", "datamodule"}}

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.set_defaults(
            {
                "checkpoint.save_last": True,
                "checkpoint.every_n_train_steps": 500,
                "checkpoint.save_top_k": 1,
                "checkpoint.filename": "step={step:07d}",
                "checkpoint.auto_insert_metric_name": False,
            }
        )
        # `--ckpt_path last` finds RUN/checkpoints/last.ckpt whatever the logger's version folder is.
        parser.link_arguments("trainer.default_root_dir", "checkpoint.dirpath", compute_fn=_checkpoint_dir)
        parser.add_lightning_class_args(ReconstructionGrid, "grid")
        parser.add_lightning_class_args(ExportDiffusers, "export")
        parser.add_lightning_class_args(MemoryBudget, "memory")

    def before_instantiate_classes(self) -> None:
        """`trainer.strategy: ddp|fsdp` become the strategies this module needs (STRATEGY_ALIASES), and
        `trainer.precision: null` (the presets' default) means bf16-mixed where the device has native bf16,
        else 32-true; both choices are printed and saved in the run's config.yaml."""
        trainer = self.config[self.subcommand].trainer
        if isinstance(trainer.strategy, str) and trainer.strategy in STRATEGY_ALIASES:
            chosen = STRATEGY_ALIASES[trainer.strategy]
            print(f"vaetrain: trainer.strategy {trainer.strategy} -> {chosen}", file=sys.stderr)
            trainer.strategy = chosen
        if trainer.precision is None:
            trainer.precision = default_precision(trainer.accelerator)
            print(f"vaetrain: trainer.precision not set; using {trainer.precision} for this hardware", file=sys.stderr)

    def before_fit(self) -> None:
        """Bad settings fail here, in one line, before any run folder is written."""
        self.datamodule.check_resolution(self.model.downsampling_factor)
        self.datamodule.prepare_split()
        for callback in self.trainer.callbacks:
            if isinstance(callback, MemoryBudget):
                callback.check(self.trainer.strategy.root_device)
        config = self.config_init[self.subcommand]
        if config.get("weights_only") is None:
            config["weights_only"] = True  # checkpoints hold tensors and plain values only

    before_validate = before_fit


def run_export(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="vaetrain export", description="Export a checkpoint as a diffusers folder.")
    parser.add_argument("checkpoint", help="a vaetrain .ckpt file")
    parser.add_argument("out", help="output folder (created; replaced if it exists)")
    parser.add_argument("--images", help="images to measure the latent scale on (default: the run's training data)")
    parser.add_argument("--resolution", type=int, help="center-crop size for the latent statistics")
    parser.add_argument("--max-images", type=int, default=256)
    parser.add_argument("--no-ema", action="store_true", help="export the trained weights, not the EMA")
    args = parser.parse_args(argv)
    out = export_checkpoint(
        args.checkpoint,
        args.out,
        images=args.images,
        resolution=args.resolution,
        max_images=args.max_images,
        use_ema=not args.no_ema,
    )
    print(f"exported {args.checkpoint} -> {out}")
    return 0


def run_convert(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="vaetrain convert",
        description="Convert between the original LDM/SD VAE format (.ckpt/.safetensors) and a diffusers folder. "
        "IN is an LDM file (-> diffusers folder OUT) or a diffusers folder, Hub id or vaetrain checkpoint "
        "(-> LDM file OUT ending in .safetensors or .ckpt).",
    )
    parser.add_argument("input", metavar="IN")
    parser.add_argument("out", metavar="OUT")
    parser.add_argument("--prefix", default="", help="key prefix of the written LDM file, e.g. 'first_stage_model.'")
    args = parser.parse_args(argv)
    model = load_autoencoder(args.input)
    if args.out.endswith((".safetensors", ".ckpt")):
        out = write_ldm_checkpoint(diffusers_to_ldm(model), args.out, prefix=args.prefix)
    else:
        out = save_diffusers_folder(model, args.out, statistics=None)
    print(f"converted {args.input} -> {out}")
    return 0


def _resolution(value: str) -> int | str:
    if value == "native":
        return value
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--resolution: {value!r} is neither a number of pixels nor 'native'") from None


def _data_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data.path", dest="data_path", required=True, help="image folder, HF dataset (id or folder) or shard pattern")
    parser.add_argument("--data.source", dest="data_source", default="auto", choices=["auto", "folder", "hf", "webdataset"])
    parser.add_argument("--data.split", dest="data_split", default="train", help="HF dataset split")
    parser.add_argument("--data.image_column", dest="data_image_column", default="image")
    parser.add_argument("--data.num_workers", dest="data_num_workers", type=int, default=None)


def _eval_datamodule(args: argparse.Namespace, resolution: int | str, batch_size: int) -> ImageDataModule:
    return ImageDataModule(
        path=args.data_path,
        source=args.data_source,
        split=args.data_split,
        image_column=args.data_image_column,
        resolution=resolution if isinstance(resolution, int) else 256,
        batch_size=batch_size,
        val_batch_size=batch_size,
        num_workers=args.data_num_workers,
    )


def run_eval(argv: list[str]) -> int:
    from vaetrain.evaluation.evaluate import METRICS, EvalOptions, evaluate
    from vaetrain.evaluation.reconstruct import TilingConfig

    parser = argparse.ArgumentParser(
        prog="vaetrain eval",
        description="Evaluate autoencoders on the same images: writes OUT/metrics.json, metrics.csv and report.html.",
    )
    parser.add_argument("models", nargs="+", metavar="MODEL", help="vaetrain .ckpt, diffusers folder, LDM file or Hub id")
    _data_arguments(parser)
    parser.add_argument("--resolution", type=_resolution, default=256, help="center-crop size (default 256) or 'native'")
    parser.add_argument("--metrics", default=",".join(METRICS), help=f"comma-separated subset of {','.join(METRICS)}")
    parser.add_argument("--out", default="eval", help="output folder (default: ./eval)")
    parser.add_argument("--max-images", type=int, default=None, help="evenly spaced subset of the images")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lpips-network", choices=["alex", "vgg"], default="alex")
    parser.add_argument("--backbones", choices=["pretrained", "random"], default="pretrained",
                        help="random: LPIPS/Inception with untrained weights, for offline smoke runs only")
    parser.add_argument("--tile-size", type=int, default=512, help="images larger than this are encoded/decoded in tiles")
    parser.add_argument("--no-tiling", action="store_true")
    parser.add_argument("--samples", type=int, default=4, help="images shown in the report")
    parser.add_argument("--run", help="training run folder whose curves the report plots (default: found from a checkpoint)")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args(argv)
    options = EvalOptions(
        metrics=tuple(m.strip() for m in args.metrics.split(",") if m.strip()),
        resolution=args.resolution,
        max_images=args.max_images,
        batch_size=args.batch_size,
        lpips_network=args.lpips_network,
        backbones=args.backbones,
        tiling=TilingConfig(tile_size=args.tile_size, enabled=not args.no_tiling),
        report_samples=args.samples,
        device=args.device,
    )
    results = evaluate(args.models, _eval_datamodule(args, args.resolution, args.batch_size), options, args.out, run_dir=args.run)
    for result in results:
        values = result.values
        shown = ", ".join(f"{k} {values[k]:.4g}" for k in (*METRICS, "scaling_factor") if values.get(k) is not None)
        print(f"{values['model']}: {shown}")
    print(f"wrote {args.out}/metrics.json, metrics.csv, report.html")
    return 1 if any(result.errors for result in results) else 0


def run_recon(argv: list[str]) -> int:
    from vaetrain.evaluation.recon import reconstruct_files
    from vaetrain.evaluation.reconstruct import TilingConfig

    parser = argparse.ArgumentParser(prog="vaetrain recon", description="Reconstruct images or folders to PNG.")
    parser.add_argument("model", metavar="MODEL", help="vaetrain .ckpt, diffusers folder, LDM file or Hub id")
    parser.add_argument("inputs", nargs="+", metavar="IN", help="image files or folders (recursive)")
    parser.add_argument("--out", required=True, help="output folder; IN's relative layout is kept")
    parser.add_argument("--side-by-side", action="store_true", help="write input | reconstruction in one PNG")
    parser.add_argument("--tile-size", type=int, default=512)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args(argv)
    written, bad = reconstruct_files(
        args.model, args.inputs, args.out, side_by_side=args.side_by_side, tiling=TilingConfig(tile_size=args.tile_size), device=args.device
    )
    print(f"wrote {written} reconstructions to {args.out}" + (f"; {len(bad)} unusable files skipped" if bad else ""))
    for name, reason in bad:
        print(f"vaetrain recon: skipped {name}: {reason}", file=sys.stderr)
    return 0


COMMANDS = {"export": run_export, "convert": run_convert, "eval": run_eval, "recon": run_recon}


def main(argv: list[str] | None = None) -> int:
    from_command_line = argv is None
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        if argv and argv[0] in COMMANDS:
            return COMMANDS[argv[0]](argv[1:])
        VaetrainCLI(
            AutoencoderModule,
            ImageDataModule,
            args=None if from_command_line else argv,
            save_config_kwargs={"overwrite": True},
            auto_configure_optimizers=False,
        )
    except ConfigError as error:
        print(f"vaetrain: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
