"""The airbench recipe's parts: whitening init, optimizer split, schedule, lookahead, TTA, switches."""

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from dlkit.core.errors import UsageError
from dlkit.nets.classifiers import AirbenchNet, build_classifier, dirac_init_, init_whitening
from dlkit.vision.airbench import PARTS, Lookahead, lr_factor, make_optimizer, prepare, recipe_config
from dlkit.vision.classifier import Classifier, tta_logits


def correlated_images(n=64, size=12, seed=0):
    """Images whose channels and neighbouring pixels are strongly correlated (as in natural images)."""
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(n, 1, size, size, generator=g)
    base = F.avg_pool2d(F.pad(base, (1, 1, 1, 1), mode="reflect"), 3, stride=1)  # spatial correlation
    mix = torch.tensor([[1.0], [0.8], [0.5]]).view(1, 3, 1, 1)
    return base * mix + 0.1 * torch.randn(n, 3, size, size, generator=g) + torch.tensor([0.5, -0.2, 0.1]).view(1, 3, 1, 1)


def test_whitening_init_whitens_patches():
    x = correlated_images()
    conv = nn.Conv2d(3, 24, 2, bias=False)
    init_whitening(conv, x, eps=1e-6)
    out = F.conv2d(x, conv.weight)  # (B, 24, H-1, W-1)
    first = out[:, :12].permute(0, 2, 3, 1).reshape(-1, 12)
    cov = first.T @ first / first.shape[0]  # second moments, as the init uses
    assert torch.allclose(cov, torch.eye(12), atol=2e-3)
    assert torch.equal(conv.weight[12:], -conv.weight[:12])
    raw = x.unfold(2, 2, 1).unfold(3, 2, 1).permute(0, 2, 3, 1, 4, 5).reshape(-1, 12)
    assert (raw.T @ raw / raw.shape[0] - torch.eye(12)).abs().max() > 0.5  # the input was far from white


def test_whitening_init_checks_the_conv():
    with pytest.raises(ValueError, match="24 filters"):
        init_whitening(nn.Conv2d(3, 12, 2), correlated_images(8))


def test_dirac_init_is_identity_on_the_first_filters():
    net = AirbenchNet(3, 10)
    dirac_init_(net.blocks)
    conv = net.blocks[1].conv1  # 64 -> 256
    x = torch.randn(2, 64, 5, 5)
    assert torch.allclose(F.conv2d(x, conv.weight, padding=1)[:, :64], x, atol=1e-6)


def test_tta_levels_average_the_documented_views():
    class TopLeft(nn.Module):  # logits = the pixel at (0, 0) of channel 0
        def forward(self, x):
            return x[:, 0, 0, 0:1]

    x = torch.rand(3, 1, 5, 6)
    m, W = TopLeft(), x.shape[-1]
    assert torch.equal(tta_logits(m, x, 0), x[:, 0, 0, 0:1])
    level1 = 0.5 * (x[:, 0, 0, 0] + x[:, 0, 0, W - 1])
    assert torch.allclose(tta_logits(m, x, 1)[:, 0], level1)
    # reflect padding: both 1-pixel shifts put x[1, 1] at (0, 0), and their mirrors x[1, W-2]
    level2 = 0.5 * level1 + 0.25 * (x[:, 0, 1, 1] + x[:, 0, 1, W - 2])
    assert torch.allclose(tta_logits(m, x, 2)[:, 0], level2)


def test_lookahead_moves_towards_and_copies_back():
    net = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    la = Lookahead(net)
    start = net[0].weight.detach().clone()
    with torch.no_grad():
        net[0].weight.add_(1.0)
    net[1].num_batches_tracked.fill_(7)
    la.update(net, 0.5)
    assert torch.allclose(net[0].weight, start + 0.5)  # halfway, and copied back into the network
    assert int(net[1].num_batches_tracked) == 7  # integer buffers are left alone
    with torch.no_grad():
        net[0].weight.add_(10.0)
    la.update(net, 1.0)  # decay 1: only copies the average back
    assert torch.allclose(net[0].weight, start + 0.5)
    cfg = recipe_config()
    assert la.decay(0.0, cfg) == 0.0 and la.decay(1.0, cfg) == pytest.approx(0.95 ** 5)


def test_schedule_is_airbench_triangle():
    cfg = recipe_config()
    assert lr_factor(0.0, cfg) == pytest.approx(0.2)
    assert lr_factor(cfg.warmup, cfg) == pytest.approx(1.0)
    assert lr_factor(1.0, cfg) == pytest.approx(0.07)
    assert lr_factor(0.5, cfg) < 1.0 and lr_factor(2.0, cfg) == pytest.approx(0.07)


def airbench_model():
    torch.manual_seed(0)
    net = build_classifier("airbench", 3, 4, 12)
    return Classifier(net, arch="airbench", classes=list("abcd"), input_size=(3, 12, 12), mean=[0.5], std=[0.25])


def test_prepare_and_optimizer_split():
    model, cfg = airbench_model(), recipe_config(batch_size=100)
    images = (torch.rand(40, 3, 12, 12) * 255).to(torch.uint8)
    prepare(model, images, cfg, torch.Generator().manual_seed(0))
    net = model.net
    assert not net.whiten.weight.requires_grad and net.whiten.bias.requires_grad
    assert not net.blocks[0].norm1.weight.requires_grad
    opt = make_optimizer(model, cfg)
    biases, other = opt.param_groups
    assert {id(p) for p in biases["params"]} == {id(m.bias) for m in net.modules() if isinstance(m, nn.BatchNorm2d)}
    assert all(p.requires_grad for p in other["params"]) and net.whiten.bias in other["params"]
    assert biases["lr_scale"] == pytest.approx(64 * other["lr_scale"])
    # the absolute decay per step is the same for both groups (bias-scaler scales the learning rate only)
    assert biases["lr_scale"] * biases["weight_decay"] == pytest.approx(other["lr_scale"] * other["weight_decay"])
    assert opt.defaults["nesterov"] and opt.defaults["momentum"] == 0.85


def test_switches():
    cfg = recipe_config("airbench", "lookahead, tta,whiten-init,whiten-freeze,bias-scaler", epochs=2.0, lr=None)
    assert (cfg.lookahead, cfg.tta, cfg.whiten_init, cfg.whiten_freeze, cfg.bias_scaler, cfg.epochs) == \
        (False, 0, False, False, 1.0, 2.0)
    assert recipe_config().lr == 11.5  # None overrides keep the preset
    model = airbench_model()
    before = model.net.whiten.weight.detach().clone()
    prepare(model, torch.zeros(4, 3, 12, 12, dtype=torch.uint8), cfg, torch.Generator())
    assert torch.equal(model.net.whiten.weight, before) and model.net.whiten.weight.requires_grad
    for name in PARTS:
        recipe_config("airbench", name)
    with pytest.raises(UsageError, match="--disable mixup"):
        recipe_config("airbench", "mixup")
    with pytest.raises(UsageError, match="unknown preset"):
        recipe_config("resnet50")
