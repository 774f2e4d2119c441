"""What a checkpoint holds that only the training module knows: the record of a run now (`record_of`), the
frozen networks kept out of every checkpoint, and the RNG state. The schema itself (`RunRecord`, reading
and writing the `vaetrain` section, the autoencoder's weights) is `vaetrain.checkpoints.schema`.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import torch

from vaetrain.checkpoints.schema import RunRecord
from vaetrain.training.networks import frozen_prefixes
from vaetrain.training.sharding import is_sharded


def record_of(module, datamodule=None) -> RunRecord:
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
    return RunRecord(module.counters, autoencoder_config, settings, data, plan, capture_rng())


def keep_frozen_networks_out(module: torch.nn.Module) -> None:
    """Frozen networks (`networks.NETWORKS`' role `frozen`: LPIPS, rFID's Inception under `val_metrics.*`, and
    those the training units declare frozen) are rebuilt at start-up, not stored in every checkpoint (VGG16 is
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


def adopt_former_data_state(checkpoint: dict[str, Any], datamodule) -> None:
    """Lightning files a data module's state under its class name: state that a checkpoint written before the
    rename (issue 33) holds under `ImageDataModule` moves to the data module's name before it is restored."""
    if datamodule is not None and "ImageDataModule" in checkpoint:
        checkpoint.setdefault(type(datamodule).__qualname__, checkpoint.pop("ImageDataModule"))
