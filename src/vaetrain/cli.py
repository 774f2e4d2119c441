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
from vaetrain.training.module import AutoencoderModule


def _checkpoint_dir(root: str | None) -> str:
    return os.path.join(root or ".", "checkpoints")


class VaetrainCLI(LightningCLI):
    """Adds the always-on callbacks as config blocks: `checkpoint`, `grid`, `export`."""

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

    def before_fit(self) -> None:
        """Bad settings fail here, in one line, before any run folder is written."""
        self.datamodule.check_resolution(self.model.downsampling_factor)
        self.datamodule.prepare_split()
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


COMMANDS = {"export": run_export, "convert": run_convert}


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
