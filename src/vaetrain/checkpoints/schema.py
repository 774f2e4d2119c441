"""The checkpoint schema: what vaetrain adds to a Lightning checkpoint, and how an autoencoder is read back.

Only this file reads or writes the `vaetrain` section and knows the state-dict names of the trained and
EMA autoencoders; training (which builds the record from its module: `training.checkpoint.record_of`),
evaluation, `export` and the command line go through it. It reads no training code, so anything that only
reads checkpoints can.
Format 2 records the training data as a `SampleSet` (any source kind, so `vaetrain export` measures
latent statistics on the same images) and the run's plan (micro-batch, accumulation, checkpointing) apart
from the configs, which are stored as given. Format 1 checkpoints (before this schema) still load.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vaetrain.data.sample_sets import SampleSet
from vaetrain.errors import ConfigError
from vaetrain.models.autoencoder import autoencoder_from_state, with_deterministic_posterior
from vaetrain.plan import StepCounters, longest_clip

CHECKPOINT_KEY = "vaetrain"
FORMAT_VERSION = 2
AUTOENCODER_PREFIX = "autoencoder."  # the LightningModule's attribute names, checked by a test
EMA_PREFIX = "ema.module."
EMA_COUNT_KEY = "ema.n_averaged"


@dataclass
class RunRecord:
    """The `vaetrain` section of a checkpoint (a training module's own: `training.checkpoint.record_of`)."""

    counters: StepCounters = field(default_factory=StepCounters)
    autoencoder_config: dict[str, Any] = field(default_factory=dict)
    """diffusers' config of the trained autoencoder (rebuilds it without the run's settings)."""
    settings: dict[str, Any] = field(default_factory=dict)
    """The module's config blocks as given (autoencoder, discriminator, loss, optimizer, ema, training, speed)."""
    data: dict[str, Any] = field(default_factory=dict)
    """`SampleSet.as_dict()` of the training data; empty when trained without a data module."""
    plan: dict[str, Any] = field(default_factory=dict)
    """Run-time decisions: micro_batch, accumulate, gradient_checkpointing, processes, memory (a plan's figures),
    longest_clip (the most frames of a training clip, None for images)."""
    rng: dict[str, Any] | None = None
    version: int = FORMAT_VERSION

    def write_into(self, checkpoint: dict[str, Any]) -> None:
        section = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("counters", "rng")}
        checkpoint[CHECKPOINT_KEY] = _plain(section) | {"counters": asdict(self.counters), "rng": self.rng}

    @classmethod
    def read_from(cls, checkpoint: dict[str, Any], where: str = "ckpt_path") -> RunRecord:
        section = checkpoint.get(CHECKPOINT_KEY) if isinstance(checkpoint, dict) else None
        if section is None:
            raise ConfigError(f"{where}: not a vaetrain checkpoint (no '{CHECKPOINT_KEY}' section)")
        version = int(section.get("version", 1))
        if version > FORMAT_VERSION:
            raise ConfigError(f"{where}: checkpoint format {version} is newer than this vaetrain reads ({FORMAT_VERSION}); upgrade vaetrain")
        known = {f.name for f in fields(StepCounters)}
        counters = StepCounters(**{k: int(v) for k, v in section["counters"].items() if k in known})
        if version == 1:  # data = {path, resolution}; configs under training_config; no plan
            old = section.get("data") or {}
            data = {"source": {"path": old.get("path"), "kind": "auto"}, "resolution": old.get("resolution")} if old else {}
            return cls(counters, section["autoencoder_config"], section.get("training_config", {}), data, {}, section.get("rng"), 1)
        return cls(
            counters, section["autoencoder_config"], section.get("settings", {}), section.get("data", {}), section.get("plan", {}), section.get("rng"), version
        )

    def sample_set(self) -> SampleSet | None:
        """The training data, as evaluation reads it; None when the run recorded none."""
        return SampleSet.from_dict(self.data) if self.data else None

    def longest_clip(self) -> int | None:
        """The most frames of any clip the run trained on: the plan's `longest_clip`, or for checkpoints written
        before it was recorded, the recorded data's clip length; None for images."""
        if self.plan.get("longest_clip"):
            return int(self.plan["longest_clip"])
        clip = self.data.get("clip") or {}
        return longest_clip(clip.get("frames"))

    def validation_images(self) -> tuple[SampleSet, str] | None:
        """The validation images and which part of them (format 2; None before)."""
        validation = self.data.get("validation")
        return (SampleSet.from_dict(validation), validation.get("part", "all")) if validation else None


def load_checkpoint(path: str | Path) -> tuple[dict[str, Any], RunRecord]:
    """A vaetrain checkpoint file, loaded weights-only (tensors and plain values; no code runs)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ConfigError(f"checkpoint '{path}' does not exist")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - unpickling and zip errors come in many types
        raise ConfigError(f"checkpoint '{path}' cannot be read weights-only ({type(error).__name__}: {error})") from error
    return checkpoint, RunRecord.read_from(checkpoint, where=f"'{path}'")


def is_vaetrain_checkpoint(path: str | Path) -> bool:
    """A memory-mapped peek: whether the file holds a `vaetrain` section."""
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # noqa: BLE001 - not a torch file, or not loadable weights-only: not ours
        return False
    return isinstance(checkpoint, dict) and CHECKPOINT_KEY in checkpoint


def autoencoder_weights(state_dict: dict[str, torch.Tensor], *, use_ema: bool = True) -> dict[str, torch.Tensor]:
    """The autoencoder's tensors from the module's state dict: the EMA copy's once it was updated (and
    `use_ema`), else the trained weights."""
    ema_updated = int(state_dict.get(EMA_COUNT_KEY, torch.tensor(0))) > 0
    prefix = EMA_PREFIX if use_ema and ema_updated else AUTOENCODER_PREFIX
    return {k[len(prefix) :]: v for k, v in state_dict.items() if k.startswith(prefix)}


def autoencoder_from_checkpoint(path: str | Path, *, use_ema: bool = True) -> tuple[nn.Module, RunRecord]:
    """The checkpoint's autoencoder (fp32, eval mode) and its record; a fixed posterior's log-variance pinned
    as the export callback pins it."""
    checkpoint, record = load_checkpoint(path)
    return autoencoder_of(checkpoint, record, use_ema=use_ema), record


def autoencoder_of(checkpoint: dict[str, Any], record: RunRecord, *, use_ema: bool = True) -> nn.Module:
    """`autoencoder_from_checkpoint` for a checkpoint already loaded (`load_checkpoint`)."""
    weights = autoencoder_weights(checkpoint["state_dict"], use_ema=use_ema)
    if record.settings.get("autoencoder", {}).get("posterior") == "fixed":
        weights = with_deterministic_posterior(weights, record.autoencoder_config["latent_channels"])
    return autoencoder_from_state(record.autoencoder_config, weights)


def _plain(value: Any) -> Any:
    """Lists, dicts and scalars only, so the checkpoint loads with `weights_only=True`."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)
