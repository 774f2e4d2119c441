"""`vaetrain fit` and `vaetrain validate`: LightningCLI with the module, the data module and the always-on
callbacks as config blocks (`checkpoint`, `grid`, `export`, `memory`)."""

from __future__ import annotations

import os
import sys

from jsonargparse import set_parsing_settings
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from vaetrain.cli.quiet import quiet
from vaetrain.data.datamodule import SampleDataModule
from vaetrain.errors import ConfigError
from vaetrain.export.callback import ExportDiffusers
from vaetrain.training.callbacks import Preemption, ReconstructionGrid, RunCheckpoint
from vaetrain.training.diagnostics import Diagnostics
from vaetrain.training.memory_budget import MemoryBudget
from vaetrain.training.module import AutoencoderModule
from vaetrain.training.precision import default_precision
from vaetrain.training.strategies import resolve_strategy

set_parsing_settings(docstring_parse_attribute_docstrings=True)  # each config field's docstring is its --help line


def _checkpoint_dir(root: str | None) -> str:
    return os.path.join(root or ".", "checkpoints")


class OneLineErrors(LightningArgumentParser):
    """A bad key or value is one line naming it (jsonargparse's own report is a usage dump and several lines)."""

    def error(self, message: str, ex: Exception | None = None):
        text = " ".join(line.strip() for line in str(message).splitlines() if line.strip())
        sys.stderr.write(f"vaetrain: error: {text} (vaetrain fit --help lists every key)\n")
        sys.exit(2)


class VaetrainCLI(LightningCLI):
    """Adds the always-on callbacks as config blocks: `checkpoint`, `grid`, `export`, `memory`, `preemption`,
    `diagnostics`."""

    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        return {"fit": {"model", "train_dataloaders", "val_dataloaders", "datamodule"}, "validate": {"model", "dataloaders", "datamodule"}}

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_lightning_class_args(RunCheckpoint, "checkpoint")
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
        parser.add_lightning_class_args(Preemption, "preemption")
        parser.add_lightning_class_args(Diagnostics, "diagnostics")

    def before_instantiate_classes(self) -> None:
        """`trainer.strategy: ddp|fsdp` become the strategies this module needs (`resolve_strategy`),
        `trainer.precision: null` (the presets' default) means bf16-mixed where the device has native bf16,
        else 32-true, and the autoencoder's channels left at 3 follow `data.channels`; each choice is printed
        and saved in the run's config.yaml (an explicit conflicting value stays a one-line error)."""
        trainer = (self.config[self.subcommand] if self.subcommand else self.config).trainer
        if isinstance(trainer.strategy, str) and resolve_strategy(trainer.strategy) != trainer.strategy:
            chosen = resolve_strategy(trainer.strategy)
            print(f"vaetrain: trainer.strategy {trainer.strategy} -> {chosen}", file=sys.stderr)
            trainer.strategy = chosen
        if trainer.precision is None:
            trainer.precision = default_precision(trainer.accelerator)
            print(f"vaetrain: trainer.precision not set; using {trainer.precision} for this hardware", file=sys.stderr)
        config = self.config[self.subcommand] if self.subcommand else self.config
        autoencoder, channels = config.model.autoencoder, config.data.channels
        if channels != 3 and (autoencoder.in_channels, autoencoder.out_channels) == (3, 3):  # left at their defaults: follow the data
            autoencoder.in_channels = autoencoder.out_channels = channels
            print(f"vaetrain: model.autoencoder.in_channels and out_channels follow data.channels={channels}", file=sys.stderr)

    def before_fit(self) -> None:
        """Bad settings fail here, in one line, before any run folder is written."""
        self.model.check_data(self.datamodule)
        self.datamodule.prepare_split()
        for callback in self.trainer.callbacks:
            if isinstance(callback, MemoryBudget):
                callback.check(self.trainer.strategy.root_device)
        config = self.config_init[self.subcommand]
        if config.get("weights_only") is None:
            config["weights_only"] = True  # checkpoints hold tensors and plain values only

    before_validate = before_fit


DISTILL_PRESET = "configs/taesd.yaml"
DISTILL_USAGE = f"""usage: vaetrain distill --teacher MODEL [--config PRESET] [fit options]

`vaetrain fit` with model.loss.distillation.teacher=MODEL (a diffusers VAE folder or Hub id): the student
(a tiny autoencoder with {DISTILL_PRESET}, taef16.yaml for 16 channels, taesd-tiny.yaml on a CPU) learns
the teacher's scaled latents and to decode them. Every `vaetrain fit --help` option applies."""


def distill_arguments(args: list[str]) -> list[str] | None:
    """`vaetrain distill` as `vaetrain fit` arguments (None: usage printed). Without --config, the TAESD
    preset when it is where the checkout keeps it."""
    if any(arg in ("-h", "--help") for arg in args):
        print(DISTILL_USAGE)
        return None
    rest, teacher, index = [], None, 0
    while index < len(args):
        arg = args[index]
        if arg == "--teacher" and index + 1 < len(args):
            teacher, index = args[index + 1], index + 2
            continue
        if arg.startswith("--teacher="):
            teacher = arg.split("=", 1)[1]
        else:
            rest.append(arg)
        index += 1
    if not teacher:
        raise ConfigError("vaetrain distill: --teacher MODEL is required (a diffusers VAE folder or Hub id)")
    if not any(arg == "--config" or arg.startswith("--config=") for arg in rest):
        if not os.path.isfile(DISTILL_PRESET):
            raise ConfigError(f"vaetrain distill: give a preset with --config (e.g. {DISTILL_PRESET} from the vaetrain checkout)")
        rest = ["--config", DISTILL_PRESET, *rest]
    return ["fit", *rest, f"--model.loss.distillation.teacher={teacher}"]


class _ModelAndData(VaetrainCLI):
    """Parses exactly as `vaetrain fit` (layered `--config` files, every override, one-line errors) and builds
    the module and the data module only: no trainer, nothing run (benchmarks build their own trainer)."""

    def instantiate_trainer(self, **kwargs):
        return None


def model_and_data(args: list[str]) -> tuple[AutoencoderModule, SampleDataModule, dict]:
    """(module, data module, the trainer block as a dict) of `vaetrain fit ARGS` without the subcommand,
    e.g. `["--config", "configs/tiny.yaml", "--data.resolution", "64"]`."""
    cli = _ModelAndData(AutoencoderModule, SampleDataModule, args=args, run=False, auto_configure_optimizers=False, parser_class=OneLineErrors)
    return cli.model, cli.datamodule, cli.config.trainer.as_dict()


def run_lightning(args: list[str] | None) -> int:
    """`args` None: the process's own arguments (`vaetrain fit ...`)."""
    quiet()
    VaetrainCLI(
        AutoencoderModule, SampleDataModule, args=args, save_config_kwargs={"overwrite": True}, auto_configure_optimizers=False, parser_class=OneLineErrors
    )
    return 0
