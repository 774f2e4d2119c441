"""The pretrained networks behind LPIPS, rFID and rFVD, injectable so tests run with random weights offline."""

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
I3D_FILE = "i3d_torchscript.pt"  # the TorchScript I3D (Kinetics-400) that StyleGAN-V's FVD uses
I3D_URL = "https://www.dropbox.com/s/ge9e5ujwgetktms/i3d_torchscript.pt?dl=1"


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


def build_video_features(backbone: Backbone = "pretrained") -> nn.Module:
    """Features of uint8 clips (B, 3, T, H, W) for rFVD: `pretrained` is the TorchScript I3D StyleGAN-V's FVD
    uses (`I3D_FILE` in torch's hub checkpoint folder, downloaded once), `random` a small seeded 3D CNN of
    the same interface (offline: plumbing only, not comparable with published FVD)."""
    if backbone == "random":
        return RandomVideoFeatures()
    where = Path(torch.hub.get_dir()) / "checkpoints" / I3D_FILE
    try:
        if not where.is_file():
            torch.hub.download_url_to_file(I3D_URL, str(where), progress=False)
        return I3DFeatures(torch.jit.load(str(where), map_location="cpu").eval())
    except Exception as error:  # noqa: BLE001 - urllib, ssl, OSError, a broken file: all mean "no weights"
        raise PretrainedWeightsUnavailable(
            f"rFVD needs the I3D file {I3D_FILE}: none at {where} and the download failed ({type(error).__name__}); "
            f"put the file there (or set TORCH_HOME), or leave rfvd out of --metrics"
        ) from error


class I3DFeatures(nn.Module):
    """The I3D's 400-d features of uint8 clips (resized to 224 and rescaled by the network itself)."""

    def __init__(self, detector: nn.Module) -> None:
        super().__init__()
        self.detector = detector

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        return self.detector(clips.float(), rescale=True, resize=True, return_features=True)


class RandomVideoFeatures(nn.Module):
    """Three strided 3D convolutions with seeded He weights, averaged over space and time: 128-d features."""

    def __init__(self) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(0)
        self.layers = nn.Sequential(
            nn.Conv3d(3, 32, 3, stride=(1, 2, 2), padding=1),
            nn.ReLU(),
            nn.Conv3d(32, 64, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv3d(64, 128, 3, stride=2, padding=1),
        )
        for module in self.layers:
            if isinstance(module, nn.Conv3d):
                fan_in = module.in_channels * 27
                module.weight.data = torch.randn(module.weight.shape, generator=generator) * (2 / fan_in) ** 0.5
                module.bias.data.zero_()
        self.requires_grad_(False)

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        return self.layers(clips.float() / 127.5 - 1).mean(dim=(2, 3, 4))
