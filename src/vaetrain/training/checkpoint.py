"""The checkpoint schema: what vaetrain adds to a Lightning checkpoint, and how an autoencoder is read back.

Only this file reads or writes the `vaetrain` section and knows the state-dict names of the trained and
EMA autoencoders; training, `export`, `eval`, `recon`, `convert` and the export callback go through it.
Format 2 records the training data as an `ImageSet` (any source kind, so `vaetrain export` measures
latent statistics on the same images) and the run's plan (micro-batch, accumulation, checkpointing) apart
from the configs, which are stored as given. Format 1 checkpoints (before this schema) still load.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vaetrain.data.image_sets import ImageSet
from vaetrain.errors import ConfigError
from vaetrain.models.autoencoder import autoencoder_from_state, with_deterministic_posterior
from vaetrain.plan import StepCounters
from vaetrain.training.networks import frozen_prefixes
from vaetrain.training.sharding import is_sharded

CHECKPOINT_KEY = "vaetrain"
FORMAT_VERSION = 2
AUTOENCODER_PREFIX = "autoencoder."  # the LightningModule's attribute names, checked by a test
EMA_PREFIX = "ema.module."
EMA_COUNT_KEY = "ema.n_averaged"


@dataclass
class RunRecord:
    """The `vaetrain` section of a checkpoint."""

    counters: StepCounters = field(default_factory=StepCounters)
    autoencoder_config: dict[str, Any] = field(default_factory=dict)
    """diffusers' config of the trained autoencoder (rebuilds it without the run's settings)."""
    settings: dict[str, Any] = field(default_factory=dict)
    """The module's config blocks as given (autoencoder, discriminator, loss, optimizer, ema, training, speed)."""
    data: dict[str, Any] = field(default_factory=dict)
    """`ImageSet.as_dict()` of the training data; empty when trained without a data module."""
    plan: dict[str, Any] = field(default_factory=dict)
    """Run-time decisions: micro_batch, accumulate, gradient_checkpointing, processes, memory (a plan's figures)."""
    rng: dict[str, Any] | None = None
    version: int = FORMAT_VERSION

    @classmethod
    def from_module(cls, module, datamodule=None) -> RunRecord:
        """The record of a training module (and its data module) now: counters, configs as given, the data,
        the run's plan, RNG."""
        configs = ("autoencoder", "discriminator", "loss", "optimizer", "ema", "training", "speed", "validation")
        data = {}
        if hasattr(datamodule, "describe"):
            validation, part = datamodule.describe_validation()
            data = datamodule.describe().as_dict() | {"validation": validation.as_dict() | {"part": part}}
        plan = module.plan.as_record()
        if getattr(datamodule, "resolution_schedule", None):  # where the crop size changes (data/streams/schedule.py)
            plan["resolution_phases"] = [phase.as_dict() for phase in datamodule.phases()]
        settings = {name: asdict(getattr(module, f"{name}_config")) for name in configs}
        autoencoder_config = dict(module.autoencoder.config) | {"_class_name": type(module.autoencoder).__name__}
        return cls(module.counters, autoencoder_config, settings, data, plan, capture_rng())

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

    def image_set(self) -> ImageSet | None:
        """The training data, as evaluation reads it; None when the run recorded none."""
        return ImageSet.from_dict(self.data) if self.data else None

    def validation_images(self) -> tuple[ImageSet, str] | None:
        """The validation images and which part of them (format 2; None before)."""
        validation = self.data.get("validation")
        return (ImageSet.from_dict(validation), validation.get("part", "all")) if validation else None


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
    weights = autoencoder_weights(checkpoint["state_dict"], use_ema=use_ema)
    if record.settings.get("autoencoder", {}).get("posterior") == "fixed":
        weights = with_deterministic_posterior(weights, record.autoencoder_config["latent_channels"])
    return autoencoder_from_state(record.autoencoder_config, weights), record


def keep_frozen_networks_out(module: torch.nn.Module) -> None:
    """Frozen networks (`networks.NETWORKS`' role `frozen`: LPIPS, rFID's Inception under `val_metrics.*`, the
    alignment's encoder, the teacher) are rebuilt at start-up, not stored in every checkpoint (VGG16 is
    58 MB), and never loaded from one. Exception:
    FSDP's loader insists on every tensor of the model, so sharded runs store them (and, resuming sharded,
    load them back)."""
    module.register_state_dict_post_hook(_drop_frozen_keys)
    module.register_load_state_dict_pre_hook(_skip_stored_frozen_keys)
    module.register_load_state_dict_post_hook(_ignore_missing_frozen_keys)


def _remove_frozen_keys(state_dict, prefix: str) -> None:
    for key in [k for k in state_dict if k.startswith(tuple(prefix + p for p in frozen_prefixes()))]:
        del state_dict[key]


def _drop_frozen_keys(module, state_dict, prefix, local_metadata) -> None:
    if not is_sharded(module.autoencoder):
        _remove_frozen_keys(state_dict, prefix)


def _skip_stored_frozen_keys(module, state_dict, prefix, *args) -> None:
    _remove_frozen_keys(state_dict, prefix)


def _ignore_missing_frozen_keys(module, incompatible_keys) -> None:
    missing = incompatible_keys.missing_keys
    missing[:] = [k for k in missing if not k.startswith(frozen_prefixes())]


def capture_rng() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _plain(value: Any) -> Any:
    """Lists, dicts and scalars only, so the checkpoint loads with `weights_only=True`."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)
