import torch

from tests.conftest import tiny_autoencoder_config
from vaetrain.evaluation.speed import FP16_MAX, check_fp16_decode, measure_speed
from vaetrain.models import build_autoencoder


def test_speed_report_counts_images():
    model = build_autoencoder(tiny_autoencoder_config()).eval()
    report = measure_speed(model, torch.rand(2, 3, 32, 32) * 2 - 1, repeats=2)
    assert report.encode_img_per_s > 0 and report.decode_img_per_s > 0 and report.peak_memory_mb > 0


def test_fp16_check_reports_the_largest_activation_and_overflow():
    torch.manual_seed(0)
    model = build_autoencoder(tiny_autoencoder_config()).eval()
    latents = torch.randn(1, 4, 8, 8)
    safe = check_fp16_decode(model, latents)
    assert 0 < safe.max_abs_activation < FP16_MAX and not safe.nonfinite
    # A layer whose output is far beyond float16's range: the SDXL-VAE failure, made on purpose.
    with torch.no_grad():
        model.decoder.conv_in.weight.mul_(1e6)
    broken = check_fp16_decode(model, latents)
    assert broken.nonfinite
    assert model.decoder.conv_in.weight.dtype == torch.float32  # the check decodes a copy
