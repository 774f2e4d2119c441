"""PSNR, SSIM, MS-SSIM, LPIPS and rFID over a set of images: one implementation for validation and `eval`.

torchmetrics keeps the running sums, so values reduce across processes (DDP) and images may come in
any batch size or image size.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torchmetrics import MeanMetric, Metric
from torchmetrics.functional.image import structural_similarity_index_measure
from torchmetrics.image import FrechetInceptionDistance, MultiScaleStructuralSimilarityIndexMeasure, PeakSignalNoiseRatio

from vaetrain.data.decoding.pixels import PixelFormat
from vaetrain.evaluation.colour import channel_bias, delta_e_2000
from vaetrain.evaluation.temporal import CAUSAL_CHUNK, ChunkPSNR, flicker, temporal_drift
from vaetrain.frames import as_clips, as_frames, is_clip

FID_REFERENCE_STATES = ("real_features_sum", "real_features_cov_sum", "real_features_num_samples")
SSIM_KERNEL = 11  # Gaussian window, sigma 1.5 (Wang et al. 2004)
SSIM_BORDER = (SSIM_KERNEL - 1) // 2
MS_SSIM_KERNEL = 11
MS_SSIM_SCALES = 5
MS_SSIM_MIN_SIDE = (MS_SSIM_KERNEL - 1) * 2 ** (MS_SSIM_SCALES - 1) + 1  # 161: the coarsest scale needs a full window


class ReconstructionMetrics(nn.Module):
    """Per-image PSNR, SSIM and MS-SSIM on [0, 1] images, averaged over images; LPIPS values are given by
    the caller (so the network stays injectable); rFID when a feature network is given.

    PSNR is the mean of per-image PSNRs (the convention of published VAE tables), not the PSNR of the
    pooled error. SSIM is averaged over the pixels where the 11x11 window fits inside the image, as in
    Wang et al. and scikit-image (torchmetrics' own average also counts reflect-padded borders, which
    lowers small images' SSIM by several hundredths). MS-SSIM uses the standard 5 scales, so it needs images of at least 161 px: for smaller
    ones it is not computed (None) rather than computed on fewer scales and not comparable. rFID is
    the FID between the originals and their reconstructions (2048-d Inception pool features).

    Images are compared in the data's own units (`pixels`: raw values / the bit depth's peak), so a 16-bit
    image's PSNR uses 65535 as the peak whatever its normalisation; `psnr_channels` / `ssim_channels` are the
    per-channel means (PSNR per image and channel), `psnr` is over all channels together.

    Colour (`evaluation.colour`): `delta_e`, the mean CIEDE2000 difference of RGB images, and `bias_c0`...,
    each channel's mean (reconstruction - original) in 8-bit levels.

    Clips (B, C, T, H, W) are measured frame by frame (PSNR, SSIM, LPIPS per frame, averaged over frames),
    plus `flicker`, their temporal error, and PSNR by latent chunk (`psnr_chunk1`, ...: the first frame, then
    chunks of `frame_chunk` frames) with `temporal_drift` (`evaluation.temporal`).
    """

    def __init__(
        self,
        *,
        ms_ssim: bool = False,
        fid_features: nn.Module | None = None,
        sync_on_compute: bool = True,
        pixels: PixelFormat | None = None,
        fid_reference: dict | None = None,
        fvd_features: nn.Module | None = None,
        frame_chunk: int = CAUSAL_CHUNK,
    ) -> None:
        """`sync_on_compute=False`: this process's images only, for code that runs on one rank of a
        distributed run (the export's model card), where a collective would wait for the others forever.
        `fid_reference`: the originals' Inception statistics from an earlier pass (`fid_reference()`), so
        only the reconstructions go through Inception."""
        super().__init__()
        self.pixels = pixels or PixelFormat()
        sync = {"sync_on_compute": sync_on_compute}
        self.psnr = PeakSignalNoiseRatio(data_range=1.0, dim=(1, 2, 3), reduction="elementwise_mean", **sync)
        self.ssim = MeanMetric(**sync)
        self.psnr_channels = ChannelMean(**sync)
        self.ssim_channels = ChannelMean(**sync)
        self.ms_ssim = MultiScaleStructuralSimilarityIndexMeasure(data_range=1.0, kernel_size=MS_SSIM_KERNEL, **sync) if ms_ssim else None
        self.ms_ssim_too_small = 0
        self.lpips = MeanMetric(**sync)
        self.flicker = MeanMetric(**sync)
        self.chunks = ChunkPSNR(frame_chunk, **sync)
        self.fvd = fid_metric(fvd_features, sync_on_compute, input_size=(3, 5, 32, 32)) if fvd_features is not None else None
        self.delta_e = MeanMetric(**sync)
        self.bias_channels = ChannelMean(**sync)
        self.fid = fid_metric(fid_features, sync_on_compute) if fid_features is not None else None
        self.fid_reference_given = fid_reference is not None and self.fid is not None
        if self.fid_reference_given:
            for key in FID_REFERENCE_STATES:
                setattr(self.fid, key, fid_reference[key].to(getattr(self.fid, key)))

    @torch.no_grad()
    def update(self, target: torch.Tensor, reconstruction: torch.Tensor, lpips: torch.Tensor | None = None) -> None:
        """Images in [-1, 1]; reconstructions are clamped to that range first, as a saved image would be.
        Computed in fp32 even inside an autocast region (SSIM's local variances lose their digits in bf16)."""
        with torch.autocast(target.device.type, enabled=False):
            self._update(target, reconstruction, lpips)

    def _update(self, target: torch.Tensor, reconstruction: torch.Tensor, lpips: torch.Tensor | None) -> None:
        length = target.shape[2] if is_clip(target) else 0  # clips: every metric on their frames, + flicker
        target, reconstruction = as_frames(target), as_frames(reconstruction)
        target01, reconstruction01 = self.pixels.to_unit(target), self.pixels.to_unit(reconstruction)
        if length:
            self.flicker.update(flicker(as_clips(target01, length), as_clips(reconstruction01, length)))
            self.chunks.update(as_clips(target01, length), as_clips(reconstruction01, length))
            if self.fvd is not None:  # rFVD: the I3D reads 8-bit RGB clips, the display channels
                self.fvd.update(as_clips(to_uint8(self.pixels.to_display(target)), length), real=True)
                self.fvd.update(as_clips(to_uint8(self.pixels.to_display(reconstruction)), length), real=False)
        self.psnr.update(reconstruction01, target01)
        ssim = _ssim_per_image_and_channel(reconstruction01, target01)
        self.ssim.update(ssim.mean(dim=1))
        self.ssim_channels.update(ssim)
        self.bias_channels.update(channel_bias(target01, reconstruction01))
        if target.shape[1] == 3 and self.pixels.display_channels() == [0, 1, 2]:  # colour: RGB images only
            self.delta_e.update(delta_e_2000(target01, reconstruction01))
        mse = (reconstruction01 - target01).square().mean(dim=(2, 3)).clamp_min(1e-20)
        self.psnr_channels.update(-10 * torch.log10(mse))
        if self.ms_ssim is not None and target.shape[1] in (1, 3):  # torchmetrics' MS-SSIM: gray or RGB
            if min(target.shape[-2:]) >= MS_SSIM_MIN_SIDE:
                self.ms_ssim.update(reconstruction01, target01)
            else:
                self.ms_ssim_too_small += len(target)
        if lpips is not None:
            self.lpips.update(lpips.float())
        if self.fid is not None:  # the Inception takes 8-bit RGB, as saved files are: the display channels
            if not self.fid_reference_given:
                self.fid.update(to_uint8(self.pixels.to_display(target)), real=True)
            self.fid.update(to_uint8(self.pixels.to_display(reconstruction)), real=False)

    def compute(self) -> dict[str, float | None]:
        """Plain floats; None for a metric that was not asked for or could not be computed."""
        values: dict[str, float | None] = {"psnr": float(self.psnr.compute()), "ssim": float(self.ssim.compute())}
        values |= {f"psnr_c{c}": v for c, v in enumerate(self.psnr_channels.compute().reshape(-1).tolist())}
        values |= {f"ssim_c{c}": v for c, v in enumerate(self.ssim_channels.compute().reshape(-1).tolist())}
        if self.ms_ssim is not None:
            values["ms_ssim"] = float(self.ms_ssim.compute()) if self.ms_ssim_too_small == 0 else None
        values["lpips"] = float(self.lpips.compute()) if self.lpips.update_count else None
        if self.flicker.update_count:
            values["flicker"] = float(self.flicker.compute())
            chunks = self.chunks.compute()
            values |= {f"psnr_chunk{k}": v for k, v in enumerate(chunks, start=1)} | {"temporal_drift": temporal_drift(chunks)}
        if self.fvd is not None:
            values["rfvd"] = float(self.fvd.compute()) if int(self.fvd.fake_features_num_samples) >= 2 else None
        values["delta_e"] = float(self.delta_e.compute()) if self.delta_e.update_count else None
        values |= {f"bias_c{c}": v for c, v in enumerate(self.bias_channels.compute().reshape(-1).tolist())}
        if self.fid is not None:
            values["rfid"] = float(self.fid.compute()) if int(self.fid.fake_features_num_samples) >= 2 else None
        return {k: (None if v is not None and math.isnan(v) else v) for k, v in values.items()}

    def fid_reference(self) -> dict | None:
        """The originals' Inception statistics so far (sums, covariance sums, count), to reuse or share."""
        return {key: getattr(self.fid, key).detach().cpu() for key in FID_REFERENCE_STATES} if self.fid is not None else None

    def reset(self) -> None:
        for metric in self.children():  # every torchmetrics state this module holds
            metric.reset()
        self.ms_ssim_too_small = 0


def fid_metric(features: nn.Module, sync_on_compute: bool = True, input_size: tuple[int, ...] = (3, 299, 299)) -> FrechetInceptionDistance:
    """FID on 8-bit RGB images (what saved files hold) through `features` (torch-fidelity's 2048-d Inception
    pool, or a random one offline): rFID here, the probe's sample FID in `diffusability`; with a video
    feature network (I3D) on 8-bit clips, rFVD (`input_size` only sizes the probe of its feature count)."""
    return FrechetInceptionDistance(feature=features, normalize=False, input_img_size=input_size, sync_on_compute=sync_on_compute)


def to_uint8(images01: torch.Tensor) -> torch.Tensor:
    """Images in [0, 1] as the 8-bit values a saved file holds (what torch-fidelity's Inception takes)."""
    return (images01 * 255).round().to(torch.uint8)


class ChannelMean(Metric):
    """The mean over images of a (images, channels) value: one mean per channel, summed across processes."""

    full_state_update = False

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.add_state("total", default=torch.zeros(0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, values: torch.Tensor) -> None:
        sums = values.double().sum(dim=0)
        self.total = sums if self.total.numel() == 0 else self.total + sums
        self.count += len(values)

    def compute(self) -> torch.Tensor:
        return self.total / self.count.clamp_min(1)


def _ssim_per_image_and_channel(reconstruction01: torch.Tensor, target01: torch.Tensor) -> torch.Tensor:
    """(images, channels): each channel's SSIM map averaged where the window fits."""
    _, ssim_map = structural_similarity_index_measure(reconstruction01, target01, data_range=1.0, kernel_size=SSIM_KERNEL, sigma=1.5, return_full_image=True)
    inside = ssim_map[..., SSIM_BORDER:-SSIM_BORDER, SSIM_BORDER:-SSIM_BORDER]
    return inside.flatten(2).mean(dim=2)
