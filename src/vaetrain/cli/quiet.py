"""Console output a user can act on: the lines Lightning and its dependencies print that say nothing about
this run (an advertisement, accelerators the machine does not have, notes about vaetrain's own deliberate
choices, deprecations inside Lightning and inside the `lpips` package) are dropped where they are made, one
pattern each; everything else, warnings included, still reaches the console. Every command installs them
(`vaetrain.cli.main`).
"""

from __future__ import annotations

import logging
import re
import warnings

NOISE_LOGS = (
    r"💡 Tip:",  # Lightning's litlogger / litmodels advertisement
    r"^(TPU|HPU) available: False",  # accelerators this machine lacks
    r"(^|\] )Seed set to \d+$",  # the preset's seed_everything, as configured (with a rank prefix on re-seeding)
    r"Automatic Mixed Precision \(AMP\)$",  # vaetrain prints the precision it chose itself
)
"""Lightning log lines dropped (regular expressions)."""

NOISE_WARNINGS = (
    r"isinstance\(treespec, LeafSpec\)` is deprecated",  # inside Lightning's own pytree helper
    r"is not supported by the model summary",  # bf16: the summary's size estimate, not the training
    r"Using ModelCheckpoint with manual optimization and every_n_train_steps",  # vaetrain steps optimizers itself, by design
    r"Found \d+ module\(s\) in eval mode at the start of training",  # frozen networks (LPIPS, the units' frozen ones) on purpose
    r"The parameter 'pretrained' is deprecated since 0\.13",  # torchvision, called so by `lpips` (LPIPS in fit, eval)
    r"Arguments other than a weight enum or `None` for 'weights' are deprecated since 0\.13",  # the same call
)
"""Warning messages dropped (regular expressions matched at the start of the message)."""


class _DropNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(re.search(pattern, message) for pattern in NOISE_LOGS)


def quiet() -> None:
    """Installs the filters (idempotent): on the handlers Lightning attaches to its loggers, and in `warnings`."""
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        for handler in logging.getLogger(name).handlers:
            if not any(isinstance(f, _DropNoise) for f in handler.filters):
                handler.addFilter(_DropNoise())
    for pattern in NOISE_WARNINGS:
        warnings.filterwarnings("ignore", message=f".*{pattern}")
