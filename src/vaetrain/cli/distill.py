"""`vaetrain distill`: `vaetrain fit` with a teacher to distil (`model.loss.distillation.teacher`) and, unless
a preset is given, the TAESD preset."""

from __future__ import annotations

import os

from vaetrain.errors import ConfigError

SUMMARY = "train a tiny autoencoder (configs/taesd.yaml) to stand in for a teacher VAE: fit with --teacher MODEL"
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
