"""Counting bad files: each is logged once with its reason, and too many stop the run."""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field

from torch.utils.data import Dataset, IterableDataset

from vaetrain.data.streams.decoded import iterate_samples
from vaetrain.errors import ConfigError

log = logging.getLogger("vaetrain.data")


class TooManyBadFiles(ConfigError):
    """More than the allowed fraction of the samples seen were unusable."""


@dataclass
class BadFileTracker:
    """Accumulates what the loaders report; raises `TooManyBadFiles` past `max_bad_fraction`.

    The fraction is taken over max(samples seen, `min_samples`), so a few bad files early in a run do
    not stop it while a broken data set still stops within the first `min_samples` samples.
    """

    max_bad_fraction: float = 0.01
    min_samples: int = 500
    seen: int = 0
    bad: int = 0
    skipped_small: int = 0
    bad_validation: int = 0  # validation files found unusable at start-up (left out of validation)
    reasons: Counter = field(default_factory=Counter)
    examples: dict[str, str] = field(default_factory=dict)
    batches: int = 0  # training batches counted (not checkpointed: it only spaces the logging)

    def update(self, seen: int, bad_files: list[tuple[str, str]], skipped_small: int = 0) -> None:
        self.seen += seen
        self.skipped_small += skipped_small
        for name, reason in bad_files:
            self.bad += 1
            self.reasons[reason.split(" (")[0]] += 1
            if name not in self.examples:
                self.examples[name] = reason
                log.warning("skipping bad file %s: %s", name, reason)
        self.check()

    def check(self) -> None:
        if self.bad and self.bad > self.max_bad_fraction * max(self.seen, self.min_samples):
            shown = "; ".join(f"{name}: {reason}" for name, reason in list(self.examples.items())[:3])
            raise TooManyBadFiles(f"{self.bad} of {self.seen} samples were bad images, over data.max_bad_fraction={self.max_bad_fraction}; e.g. {shown}")

    def metrics(self) -> dict[str, float]:
        return {
            "data/bad_samples": float(self.bad),
            "data/bad_files": float(len(self.examples)),
            "data/skipped_small": float(self.skipped_small),
            "data/samples_read": float(self.seen),
            "data/bad_validation_files": float(self.bad_validation),
        }

    def take(self, batch: dict, source, trainer) -> object:
        """A training batch's images, after counting what its loader skipped (raising past the threshold),
        telling the source what was read, and logging the counts now and then."""
        self.update(len(batch["pixels"]) + len(batch["bad"]), batch["bad"], batch["small"])
        source.observe(batch)
        self.batches += 1
        if trainer is not None and (batch["bad"] or batch["small"] or self.batches % 50 == 0):
            self.log_to(trainer.loggers, trainer.global_step)
        return batch["pixels"]

    def state_dict(self) -> dict[str, int]:
        return {"bad": self.bad, "seen": self.seen, "skipped_small": self.skipped_small}

    def load_state_dict(self, state: dict) -> None:
        self.bad, self.seen, self.skipped_small = (int(state.get(key, 0)) for key in ("bad", "seen", "skipped_small"))

    def log_to(self, loggers, step: int) -> None:
        """The counts, to Lightning's loggers."""
        for logger in loggers:
            logger.log_metrics(self.metrics(), step=step)

    def validation_checked(self, usable: int, bad: list[tuple[str, str]], key: str) -> None:
        """Records the validation images found unusable at start-up (logged once each); none usable among
        some is a one-line error naming them, before any training."""
        self.bad_validation = len(bad)
        shown = "; ".join(f"{name}: {reason}" for name, reason in bad[:3]) + (f"; and {len(bad) - 3} more" if len(bad) > 3 else "")
        if bad and usable == 0:
            raise ConfigError(
                f"{key}: none of the {len(bad)} validation images is usable ({shown}); fix or remove them, or choose others with data.val_size or data.val_path"
            )
        if bad:
            log.warning("%d of %d validation images are unusable and left out of validation: %s", len(bad), usable + len(bad), shown)


def scan_usable(samples: Dataset | IterableDataset) -> tuple[list[int], list[tuple[str, str]]]:
    """(positions of the samples with an image, (name, reason) of those without) of a finite dataset of
    decoded samples (`DecodedImages` without replacement, or a finite stream)."""
    usable, bad = [], []
    for position, sample in enumerate(iterate_samples(samples)):
        if sample["pixels"] is not None:
            usable.append(position)
        else:
            bad += sample["bad"] or [(f"sample {position}", "smaller than the crop (data.small_images=skip)")]
    return usable, bad
