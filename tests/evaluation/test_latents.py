import torch

from tests.conftest import tiny_autoencoder_config
from vaetrain.evaluation import measure_latent_statistics
from vaetrain.models import build_autoencoder


def test_latent_statistics_match_a_direct_computation():
    torch.manual_seed(0)
    model = build_autoencoder(tiny_autoencoder_config()).eval()
    batches = [torch.rand(3, 3, 32, 32) * 2 - 1 for _ in range(3)]
    stats = measure_latent_statistics(model, batches, sample=False)
    with torch.no_grad():
        latents = torch.cat([model.encode(b).latent_dist.mode() for b in batches]).double()
    assert abs(stats.mean - latents.mean().item()) < 1e-6
    assert abs(stats.std - latents.std(unbiased=False).item()) < 1e-6
    per_channel = latents.transpose(0, 1).flatten(1)
    assert torch.allclose(torch.tensor(stats.channel_std, dtype=torch.float64), per_channel.std(1, unbiased=False), atol=1e-6)
    assert stats.scaling_factor == 1 / stats.std and stats.count == 9
