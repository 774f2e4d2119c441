"""The callback that writes what a person looks at during training: reconstruction grids. (The end-of-run
diffusers folder is `vaetrain.export.callback.ExportDiffusers`.)"""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
from torchvision.utils import make_grid, save_image


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
            self._images = trainer.datamodule.fixed_images(self.num_images)
        images = self._images.to(pl_module.device)
        was_training = pl_module.training
        pl_module.eval()
        reconstructions = pl_module(images).float().clamp(-1, 1)
        pl_module.train(was_training)
        if not trainer.is_global_zero:
            return None
        pairs = torch.stack([images.float(), reconstructions], dim=1).flatten(0, 1)  # input, recon, input, ...
        grid = make_grid((pairs + 1) / 2, nrow=2 * min(4, len(images)), padding=2, pad_value=1.0)
        path = Path(trainer.default_root_dir) / "reconstructions" / f"step_{self._last_written:07d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        save_image(grid, path)
        experiment = getattr(trainer.logger, "experiment", None)
        if hasattr(experiment, "add_image"):
            experiment.add_image("reconstructions", grid, global_step=self._last_written)
        return path
