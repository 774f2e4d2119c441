"""The pretrained networks behind LPIPS and rFID, injectable so tests run with random weights offline."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Literal

import torch
from torch import nn
from torchmetrics.image.fid import NoTrainInceptionV3

from vaetrain.errors import PretrainedWeightsUnavailable
from vaetrain.losses.perceptual import PerceptualLoss, PerceptualNetwork, build_perceptual_loss

Backbone = Literal["pretrained", "random"]
INCEPTION_WEIGHTS_FILE = "weights-inception-2015-12-05-6726825d.pth"  # torch-fidelity's FID Inception


def build_lpips_metric(network: PerceptualNetwork = "alex", backbone: Backbone = "pretrained") -> PerceptualLoss:
    """LPIPS as a metric: AlexNet by default (the network of published VAE tables), VGG selectable."""
    return build_perceptual_loss(network, backbone, offline_hint="or leave lpips out of --metrics")


def build_inception(backbone: Backbone = "pretrained") -> nn.Module:
    """torch-fidelity's FID InceptionV3 (2048-d pool features) as torchmetrics uses it.

    `random` keeps the architecture with untrained weights (tests; no download). `pretrained` loads the
    cached file or downloads it, and fails with one line naming the file and its folder.
    """
    if backbone == "random":
        network = RandomInception(name="inception-v3-compat", features_list=["2048"], feature_extractor_weights_path=_empty_state_dict())
        generator = torch.Generator().manual_seed(0)
        for module in network.modules():
            if isinstance(module, nn.Conv2d):  # He init keeps the signal alive through 90 layers
                fan_in = module.in_channels * module.kernel_size[0] * module.kernel_size[1]
                module.weight.data = torch.randn(module.weight.shape, generator=generator) * (2 / fan_in) ** 0.5
        return network
    try:
        return NoTrainInceptionV3(name="inception-v3-compat", features_list=["2048"])
    except Exception as error:  # noqa: BLE001 - urllib, ssl, OSError: all mean "no weights"
        where = Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_WEIGHTS_FILE
        raise PretrainedWeightsUnavailable(
            f"rFID needs the Inception weights file {INCEPTION_WEIGHTS_FILE}: none at {where} and the download failed "
            f"({type(error).__name__}); put the file there (or set TORCH_HOME), or leave rfid out of --metrics"
        ) from error


def _empty_state_dict() -> io.BytesIO:
    buffer = io.BytesIO()
    torch.save({}, buffer)
    buffer.seek(0)
    return buffer


class RandomInception(NoTrainInceptionV3):
    """The FID Inception with PyTorch's default initialisation: the constructor's weight loading is skipped."""

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        if state_dict:
            return super().load_state_dict(state_dict, strict=strict, assign=assign)
        return None
