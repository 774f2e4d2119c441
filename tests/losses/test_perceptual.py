import torch

from vaetrain.losses import PerceptualLoss, PretrainedWeightsUnavailable, build_perceptual_loss


def test_lpips_stays_in_eval_mode_when_parent_trains(random_lpips):
    parent = torch.nn.Sequential(random_lpips)
    parent.train()
    assert not any(m.training for m in random_lpips.network.modules())


def test_lpips_is_differentiable_and_frozen(random_lpips):
    a = torch.rand(2, 3, 32, 32, requires_grad=True)
    b = torch.rand(2, 3, 32, 32)
    distance = random_lpips(a * 2 - 1, b * 2 - 1)
    assert distance.shape == (2,)
    distance.sum().backward()
    assert a.grad.abs().sum() > 0
    assert not any(p.requires_grad for p in random_lpips.parameters())


def test_missing_pretrained_weights_fail_in_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    import torchvision.models._api

    monkeypatch.setattr(torchvision.models._api, "load_state_dict_from_url", _offline)
    try:
        build_perceptual_loss("alex", "pretrained")
    except PretrainedWeightsUnavailable as error:
        message = str(error)
        assert "alexnet-owt-7be5be79.pth" in message and str(tmp_path) in message and "\n" not in message
    else:
        raise AssertionError("expected PretrainedWeightsUnavailable")


def _offline(*args, **kwargs):
    raise OSError("no network")


def test_perceptual_loss_wraps_any_module():
    loss = PerceptualLoss(torch.nn.Identity().eval())
    assert loss.network.training is False
