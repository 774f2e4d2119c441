"""Training callbacks: reconstruction grids (what a person looks at), checkpoints that keep the newest n,
and pre-emption (SIGTERM saves and stops). The end-of-run diffusers folder is
`vaetrain.export.callback.ExportDiffusers`."""

from __future__ import annotations

import sys
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from torchvision.utils import make_grid, save_image

from vaetrain.data.decoding.pixels import PixelFormat
from vaetrain.data.streams.decoded import first_usable
from vaetrain.errors import ConfigError
from vaetrain.frames import as_frames, is_clip


class ReconstructionGrid(L.Callback):
    """Every `every_n_steps` generator steps (and at the end): fixed validation images | reconstructions.

    Written to RUN/reconstructions/step_XXXXXXX.png and, with TensorBoard, to the logger.
    """

    def __init__(self, every_n_steps: int = 500, num_images: int = 8) -> None:
        self.every_n_steps = every_n_steps
        self.num_images = num_images
        self._images: torch.Tensor | None = None
        self._last_written = -1

    def on_train_batch_end(self, trainer: L.Trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        step = pl_module.counters.generator_steps
        if self.every_n_steps > 0 and step % self.every_n_steps == 0 and step != self._last_written:
            self.write(trainer, pl_module)

    def on_train_end(self, trainer: L.Trainer, pl_module) -> None:
        if pl_module.counters.generator_steps != self._last_written:
            self.write(trainer, pl_module)

    @torch.no_grad()
    def write(self, trainer: L.Trainer, pl_module) -> Path | None:
        """Every process reconstructs (a sharded model's forward needs all of them); rank 0 writes."""
        self._last_written = pl_module.counters.generator_steps
        if trainer.datamodule is None:
            return None
        if self._images is None:
            self._images = fixed_images(trainer.datamodule, self.num_images)
        images = self._images.to(pl_module.device)
        was_training = pl_module.training
        pl_module.eval()
        reconstructions = pl_module(images).float().clamp(-1, 1)
        pl_module.train(was_training)
        if not trainer.is_global_zero:
            return None
        pixels = getattr(trainer.datamodule, "pixels", PixelFormat())  # N channels: the display triplet
        if is_clip(images):  # per clip, a strip of its frames above a strip of their reconstructions
            strips = torch.stack([images, reconstructions], dim=1).flatten(0, 1)
            grid = make_grid(pixels.to_display(as_frames(strips)), nrow=images.shape[2], padding=2, pad_value=1.0)
        else:
            pairs = torch.stack([pixels.to_display(images), pixels.to_display(reconstructions)], dim=1).flatten(0, 1)  # input, recon, ...
            grid = make_grid(pairs, nrow=2 * min(4, len(images)), padding=2, pad_value=1.0)
        path = Path(trainer.default_root_dir) / "reconstructions" / f"step_{self._last_written:07d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        save_image(grid, path)
        experiment = getattr(trainer.logger, "experiment", None)
        if hasattr(experiment, "add_image"):
            experiment.add_image("reconstructions", grid, global_step=self._last_written)
        return path


class RunCheckpoint(ModelCheckpoint):
    """Lightning's ModelCheckpoint, plus `keep_last_n`: keep the n newest step checkpoints (a step-monitored
    top-k), for `checkpoint.monitor` absent. With `monitor` (e.g. val/psnr, mode max) it keeps the best
    `save_top_k` as Lightning does. `last.ckpt` is always the newest complete one (writes are atomic), and
    is written at the final step of a run however it stopped (see `on_train_end`)."""

    def __init__(self, *args, keep_last_n: int | None = None, **kwargs) -> None:
        if keep_last_n is not None:
            if keep_last_n < 1:
                raise ConfigError(f"checkpoint.keep_last_n must be >= 1, got {keep_last_n}")
            if kwargs.get("monitor") not in (None, "step"):
                raise ConfigError("checkpoint.keep_last_n keeps the newest checkpoints; with checkpoint.monitor use checkpoint.save_top_k")
            kwargs |= {"monitor": "step", "mode": "max", "save_top_k": keep_last_n}
        super().__init__(*args, **kwargs)
        self.keep_last_n = keep_last_n

    def on_train_end(self, trainer: L.Trainer, pl_module) -> None:
        """Lightning writes last.ckpt at the end only when no checkpoint was written at all, so a run stopped by
        `max_time`, or by `max_steps` between two saves, would keep an older last.ckpt (and a resume would
        redo those steps): write it at the final step, unless that step was just written."""
        if self.save_last and trainer.global_step != self._last_global_step_saved and not self._should_skip_saving_checkpoint(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
        super().on_train_end(trainer, pl_module)


class Preemption(L.Callback):
    """On SIGTERM (a scheduler's pre-emption, `kill`): after the current micro-batch, save RUN/checkpoints/
    last.ckpt at the current step and end the run with exit code 0; `--ckpt_path last` resumes it exactly.

    Lightning records the signal (`trainer.received_sigterm`) but acts on it only at an epoch's end (vaetrain
    trains one endless epoch) or, with several processes, raises after the batch without saving. Here every
    process agrees (any one received it), all take part in the save (FSDP gathers), and training stops;
    Lightning then ends the run through its SIGTERM exit (code 0), skipping the end-of-fit export."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self.preempted_at: int | None = None

    def on_train_batch_end(self, trainer: L.Trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if not self.enabled or self.preempted_at is not None:
            return
        received = bool(getattr(trainer, "received_sigterm", False))
        if trainer.world_size > 1:
            received = trainer.strategy.reduce_boolean_decision(received, all=False)
        if not received:
            return
        self.preempted_at = trainer.global_step
        checkpoint = trainer.checkpoint_callback
        if checkpoint is not None and checkpoint.dirpath is not None:
            path = Path(checkpoint.dirpath) / f"{checkpoint.CHECKPOINT_NAME_LAST}{checkpoint.FILE_EXTENSION}"
            # the callback's own record first (it is saved inside): else a resumed run finds last.ckpt not its
            # `last_model_path` and writes last-v1.ckpt beside it, leaving last.ckpt stale. Its step counter is
            # left alone: the checkpoint callback runs after this one and still writes a step file due now.
            checkpoint.last_model_path = str(path)
            trainer.save_checkpoint(path)  # every process: a sharded model gathers, rank 0 writes
            if trainer.is_global_zero:
                print(f"vaetrain: SIGTERM: saved {path} at generator step {trainer.global_step}; resume with --ckpt_path last", file=sys.stderr)
        trainer.should_stop = True


def fixed_images(datamodule, count: int) -> torch.Tensor:
    """Center crops of the first `count` validation images (then training images if too few): the same
    inputs in every reconstruction grid."""
    images: list[torch.Tensor] = []
    for part in ("val", "train"):
        images += [sample["pixels"] for sample in first_usable(datamodule.samples(part, train=False), count - len(images))]
    return torch.stack(images)
