"""The networks of the experiment (from :mod:`dlkit.nets.classifiers`) and the paper's per-network defaults."""

from __future__ import annotations

from dlkit.core.errors import UsageError
from dlkit.nets.classifiers import build_classifier
from dlkit.vision.classifier import Classifier

# Zhang et al. 2017 appendix A: the paper's four networks, plus a residual network, the small MNIST CNN and
# airbench94's fast CIFAR network (Jordan 2024; trained here with the paper's SGD, not the airbench recipe).
ARCHS = ("mlp-1x512", "mlp-3x512", "alexnet-small", "inception-small", "resnet", "mnist-cnn", "airbench")
# Paper: lr 0.1 for Inception, 0.01 for AlexNet and the MLPs (decayed by 0.95 per epoch); BatchNorm nets take 0.1.
DEFAULT_LR = {"inception-small": 0.1, "resnet": 0.1, "mnist-cnn": 0.1, "airbench": 0.1}


def default_lr(arch: str) -> float:
    return DEFAULT_LR.get(arch, 0.01)


def arch_kwargs(arch: str, dropout: float) -> dict:
    """The settings stored in the classifier file (only the non-default ones)."""
    return {"dropout": dropout} if dropout else {}


def build_model(arch: str, shape: tuple[int, int, int], classes: list[str], dropout: float = 0.0,
                whiten: bool = True, mean=(0.0,), std=(1.0,)) -> Classifier:
    """A fresh :class:`Classifier` for (C, H, W) inputs; ``whiten``: per-image whitening (the paper's CIFAR setup)."""
    if arch not in ARCHS:
        raise UsageError(f"unknown architecture '{arch}': expected one of {', '.join(ARCHS)}")
    c, h, w = shape
    if h != w:
        raise UsageError(f"images must be square for --arch {arch} (got {w}x{h}); use --image-size")
    net = build_classifier(arch, c, len(classes), h, **arch_kwargs(arch, dropout))
    return Classifier(net, arch=arch, classes=classes, input_size=shape, mean=mean, std=std, whiten=whiten,
                      arch_kwargs=arch_kwargs(arch, dropout))
