"""Classifier architectures: shapes, gradients, determinism, and the paper's parameter counts."""

import pytest
import torch

from dlkit.core.errors import UsageError
from dlkit.nets.classifiers import ARCHS, build_classifier, count_parameters


@pytest.mark.parametrize("arch", ARCHS)
def test_contract(arch):
    c, size = (1, 28) if arch == "mnist-cnn" else (3, 32 if arch == "resnet" else 28)
    torch.manual_seed(0)
    net = build_classifier(arch, c, 10, size)
    torch.manual_seed(0)
    again = build_classifier(arch, c, 10, size)
    x = torch.randn(4, c, size, size)
    assert torch.equal(net.eval()(x), again.eval()(x))  # same seed, same network
    out = net.train()(x)
    assert out.shape == (4, 10)
    out.logsumexp(1).mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters())


def test_paper_parameter_counts():
    # Zhang et al. 2017, Table 1 (CIFAR-10, 28x28x3 inputs): exact for the MLPs and AlexNet; our Inception
    # has BatchNorm affine parameters where the paper counts 1,649,402.
    counts = {a: count_parameters(build_classifier(a, 3, 10, 28)) for a in ("mlp-1x512", "mlp-3x512", "alexnet-small",
                                                                           "inception-small")}
    assert counts["mlp-1x512"] == 1_209_866
    assert counts["mlp-3x512"] == 1_735_178
    assert counts["alexnet-small"] == 1_387_786
    assert abs(counts["inception-small"] - 1_649_402) / 1_649_402 < 0.01


def test_resnet_is_small_and_residual():
    net = build_classifier("resnet", 3, 10, 32)
    assert count_parameters(net) <= 5_000_000
    assert count_parameters(build_classifier("resnet", 3, 10, 32, widths=[32, 64, 128], stem=24)) < 600_000


def test_bad_arch_and_kwargs():
    with pytest.raises(UsageError, match="unknown architecture"):
        build_classifier("vgg-99", 3, 10, 32)
    with pytest.raises(UsageError, match="takes no setting"):
        build_classifier("mlp-1x512", 3, 10, 32, widths=[1])
