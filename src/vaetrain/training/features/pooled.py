"""vqgan-training's low-pass reconstruction term as a unit (`model.loss.pooled_reconstruction`): input and
reconstruction area-pooled by `factor` and compared (optionally on flat regions only,
`losses.terms.pooled_reconstruction_loss`). The term itself is one of the image terms of the objective
(`losses.objective.image_terms`, the whole objective in one module); the unit refuses the image sizes its
flat-region mask cannot work on."""

from __future__ import annotations

from collections.abc import Iterator

from torch import nn

from vaetrain.losses.terms import FLAT_MASK_BLUR
from vaetrain.training.features.base import Feature, Setup


class PooledReconstruction(Feature):
    name = "pooled_reconstruction"

    @classmethod
    def wanted(cls, setup: Setup, autoencoder: nn.Module) -> bool:
        return setup.loss.pooled_reconstruction.weight > 0

    def check_sizes(self, sides: list[int], resolution) -> Iterator[str]:
        pooled = self.setup.loss.pooled_reconstruction
        if pooled.mask and min(sides) // pooled.factor <= FLAT_MASK_BLUR // 2:
            yield (
                f"model.loss.pooled_reconstruction.mask needs pooled images over {FLAT_MASK_BLUR // 2} px (its blur's reach); "
                f"data.resolution {min(sides)} / factor {pooled.factor} is {min(sides) // pooled.factor}"
            )
