"""`vaetrain COMMAND ...`: the one command line. `fit` and `validate` are LightningCLI (YAML presets, every key overridable;
`distill` is `fit` with a preset, `cli.distill`); `eval`, `recon`, `export` and `convert` are argparse front ends of plain functions and
name the same things the same way (`--data.path`, `--data.resolution`, ...). vaetrain's own errors,
raised anywhere (DataLoader workers included), end here as one line and a non-zero exit.

May import every vaetrain package; none imports this one.
"""

from __future__ import annotations

import sys

from vaetrain.cli.distill import SUMMARY as DISTILL_SUMMARY
from vaetrain.cli.distill import distill_arguments
from vaetrain.cli.quiet import quiet
from vaetrain.errors import ConfigError, VaetrainError, one_line

COMMANDS = {
    "fit": "train or fine-tune an autoencoder from a preset (configs/*.yaml; every key can be overridden)",
    "validate": "run the validation metrics of a preset or checkpoint without training",
    "distill": DISTILL_SUMMARY,
    "eval": "measure autoencoders on the same images: OUT/metrics.json, metrics.csv and report.html",
    "recon": "reconstruct image files or folders to PNG, at each image's own size",
    "probe": "how easily a diffusion model learns each VAE's latents: same small DiT, same budget, validation loss",
    "export": "a training checkpoint as a diffusers folder, with the latent scale measured on images",
    "convert": "LDM/Stable Diffusion VAE files <-> diffusers folders",
}


def usage() -> str:
    lines = ["usage: vaetrain COMMAND [options]   (vaetrain COMMAND --help lists a command's options)", "", "commands:"]
    lines += [f"  {name:<9} {text}" for name, text in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from_command_line = argv is None
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage(), file=sys.stdout if argv else sys.stderr)
        return 0 if argv else 2
    if argv[0] not in COMMANDS:
        print(f"vaetrain: error: unknown command '{argv[0]}'\n{usage()}", file=sys.stderr)
        return 2
    quiet()
    try:
        if argv[0] in ("fit", "validate"):
            from vaetrain.cli.fit import run_lightning

            return run_lightning(None if from_command_line else argv)
        if argv[0] == "distill":
            from vaetrain.cli.fit import run_lightning

            arguments = distill_arguments(argv[1:])
            return 0 if arguments is None else run_lightning(arguments)
        from vaetrain.cli import commands

        return getattr(commands, f"run_{argv[0]}")(argv[1:])
    except VaetrainError as error:
        print(f"vaetrain: error: {one_line(error)}", file=sys.stderr)
        return 2 if isinstance(error, ConfigError) else 1
