"""Image classifiers, built by name: ``build_classifier(arch, in_channels, num_classes, image_size)``.

* ``mlp-1x512``, ``mlp-3x512``: Zhang et al. 2017 (appendix A), ReLU multi-layer perceptrons.
* ``alexnet-small``: Zhang et al.'s small AlexNet: two (conv 5x5 -> max-pool 3x3 -> local response
  normalisation) modules and two fully connected layers of 384 and 192 units (the cuda-convnet / TF CIFAR-10
  tutorial model, 64 filters per conv).
* ``inception-small``: Zhang et al.'s small Inception (appendix, Fig. 3): conv 3x3/96, 2 Inception modules,
  a downsample module, 4 Inception modules, a downsample module, 2 Inception modules, global mean pooling.
  Each "conv" is conv + BatchNorm + ReLU.
* ``mnist-cnn``: a small VGG-style CNN with BatchNorm (the bundled MNIST classifier).
* ``cnn-small``: two strided 4x4 convolutions (``width``, 2 ``width``) and a ``hidden``-unit layer: the small
  MNIST network of Wong & Kolter 2018 and Wong et al. 2020 (width 16, hidden 100); cheap enough to attack 400
  times per image on a CPU.
* ``resnet``: a fast residual CIFAR network in the spirit of airbench94 (Jordan 2024) and Myrtle's ResNet-9
  (Page 2018): conv + max-pool + BN + GELU blocks, each with a residual conv pair; global max pooling; a
  scaled linear head. Widths are arguments (``widths=(64, 256, 256)`` by default, about 3.3M parameters).
* ``airbench``: the airbench94 network (Jordan 2024, "94% on CIFAR-10 in 3.29 seconds on a single GPU"): a 2x2
  patch-whitening conv (3 -> 24 channels, no padding, set from the data by :func:`init_whitening`), GELU, then
  three conv groups of ``widths=(64, 256, 256)`` (conv -> max-pool 2 -> BN -> GELU -> conv -> BN -> GELU, no
  residual), global max pooling and a bias-free linear head scaled by 1/9. About 1.97M parameters.

All take float inputs already normalised (the :class:`dlkit.vision.classifier.Classifier` wrapper owns the
normalisation) of shape (B, C, H, W) and return logits (B, num_classes). ``dropout`` > 0 inserts dropout
before the classifier layer(s) (Table 1's explicit regulariser).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from dlkit.core.errors import UsageError

AIRBENCH_WIDTHS = (64, 256, 256)  # airbench94's three conv groups (airbench96: 128, 384, 384)
ARCHS = ("mlp-1x512", "mlp-3x512", "alexnet-small", "inception-small", "mnist-cnn", "resnet", "airbench", "cnn-small")


def mlp(in_features: int, num_classes: int, hidden: int = 512, depth: int = 1, dropout: float = 0.0) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Flatten()]
    width = in_features
    for _ in range(depth):
        layers += [nn.Linear(width, hidden), nn.ReLU(inplace=True)]
        if dropout:
            layers.append(nn.Dropout(dropout))
        width = hidden
    layers.append(nn.Linear(width, num_classes))
    return nn.Sequential(*layers)


class AlexNetSmall(nn.Module):
    def __init__(self, in_channels: int, num_classes: int, image_size: int, dropout: float = 0.0):
        super().__init__()

        def module(c_in: int) -> nn.Sequential:
            return nn.Sequential(
                nn.Conv2d(c_in, 64, 5, padding=2), nn.ReLU(inplace=True),
                nn.MaxPool2d(3, stride=2, padding=1),
                nn.LocalResponseNorm(9, alpha=0.001, beta=0.75, k=1.0),  # TF tutorial: radius 4, alpha 0.001/9
            )

        self.features = nn.Sequential(module(in_channels), module(64))
        side = _pooled(_pooled(image_size))
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(64 * side * side, 384), nn.ReLU(inplace=True), nn.Dropout(dropout),
            nn.Linear(384, 192), nn.ReLU(inplace=True), nn.Dropout(dropout),
            nn.Linear(192, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def _pooled(side: int) -> int:
    """Output side of a 3x3 / stride 2 / padding 1 pooling (or conv)."""
    return (side - 1) // 2 + 1


def conv_bn(c_in: int, c_out: int, kernel: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, kernel, stride, kernel // 2, bias=False),
                         nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


class InceptionModule(nn.Module):
    """1x1 conv (ch1) and 3x3 conv (ch3) side by side, concatenated (Zhang et al. Fig. 3)."""

    def __init__(self, c_in: int, ch1: int, ch3: int):
        super().__init__()
        self.b1, self.b3 = conv_bn(c_in, ch1, 1), conv_bn(c_in, ch3, 3)
        self.out_channels = ch1 + ch3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.b1(x), self.b3(x)], dim=1)


class DownsampleModule(nn.Module):
    """3x3 conv with stride 2 (ch3) beside a 3x3 max-pool with stride 2, concatenated."""

    def __init__(self, c_in: int, ch3: int):
        super().__init__()
        self.conv = conv_bn(c_in, ch3, 3, stride=2)
        self.pool = nn.MaxPool2d(3, stride=2, padding=1)
        self.out_channels = ch3 + c_in

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.conv(x), self.pool(x)], dim=1)


class InceptionSmall(nn.Module):
    PLAN = [("i", 32, 32), ("i", 32, 48), ("d", 80), ("i", 112, 48), ("i", 96, 64), ("i", 80, 80), ("i", 48, 96),
            ("d", 96), ("i", 176, 160), ("i", 176, 160)]

    def __init__(self, in_channels: int, num_classes: int, dropout: float = 0.0):
        super().__init__()
        layers: list[nn.Module] = [conv_bn(in_channels, 96, 3)]
        c = 96
        for kind, *ch in self.PLAN:
            m = InceptionModule(c, *ch) if kind == "i" else DownsampleModule(c, *ch)
            layers.append(m)
            c = m.out_channels
        self.features = nn.Sequential(*layers)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(c, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x).mean(dim=(2, 3))  # (B, 336): global mean pooling
        return self.fc(self.dropout(x))


class MnistCNN(nn.Module):
    def __init__(self, in_channels: int, num_classes: int, image_size: int, width: int = 32, dropout: float = 0.0):
        super().__init__()
        w = width
        self.features = nn.Sequential(
            conv_bn(in_channels, w, 3), conv_bn(w, w, 3), nn.MaxPool2d(2),
            conv_bn(w, 2 * w, 3), conv_bn(2 * w, 2 * w, 3), nn.MaxPool2d(2),
        )
        side = image_size // 4
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(2 * w * side * side, 256, bias=False), nn.BatchNorm1d(256), nn.ReLU(inplace=True),
            nn.Dropout(dropout), nn.Linear(256, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class ResBlock(nn.Module):
    """conv -> max-pool 2 -> BN -> GELU, then x + GELU(BN(conv(GELU(BN(conv(x))))))."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.conv0 = nn.Conv2d(c_in, c_out, 3, padding=1, bias=False)
        self.bn0 = nn.BatchNorm2d(c_out)
        self.conv1 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.gelu(self.bn0(F.max_pool2d(self.conv0(x), 2)))
        y = F.gelu(self.bn1(self.conv1(x)))
        return x + F.gelu(self.bn2(self.conv2(y)))


class FastResNet(nn.Module):
    def __init__(self, in_channels: int, num_classes: int, widths=(64, 256, 256), stem: int = 32,
                 head_scale: float = 0.125, dropout: float = 0.0):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, stem, 3, padding=1, bias=False), nn.BatchNorm2d(stem), nn.GELU())
        blocks, c = [], stem
        for w in widths:
            blocks.append(ResBlock(c, w))
            c = w
        self.blocks = nn.Sequential(*blocks)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(c, num_classes, bias=False)
        self.head_scale = head_scale  # Myrtle/airbench: scaled logits instead of a temperature

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.stem(x))
        x = torch.amax(x, dim=(2, 3))  # (B, C): global max pooling
        return self.fc(self.dropout(x)) * self.head_scale


class ConvGroup(nn.Module):
    """airbench's block: conv -> max-pool 2 -> BN -> GELU -> conv -> BN -> GELU."""

    def __init__(self, c_in: int, c_out: int, bn_momentum: float = 0.4):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1, bias=False)
        self.norm1 = nn.BatchNorm2d(c_out, eps=1e-12, momentum=bn_momentum)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.norm2 = nn.BatchNorm2d(c_out, eps=1e-12, momentum=bn_momentum)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.gelu(self.norm1(F.max_pool2d(self.conv1(x), 2)))  # (B, C, H/2, W/2)
        return F.gelu(self.norm2(self.conv2(x)))


class AirbenchNet(nn.Module):
    """Jordan 2024's airbench94 network. BN momentum 0.4 in PyTorch's convention (the paper's 0.6 running-average
    weight), eps 1e-12. The whitening conv is an ordinary conv here; :func:`init_whitening` sets it from data."""

    def __init__(self, in_channels: int, num_classes: int, widths=AIRBENCH_WIDTHS, head_scale: float = 1 / 9,
                 dropout: float = 0.0):
        super().__init__()
        k = 2
        self.whiten = nn.Conv2d(in_channels, 2 * in_channels * k * k, k, padding=0, bias=True)
        blocks, c = [], self.whiten.out_channels
        for w in widths:
            blocks.append(ConvGroup(c, w))
            c = w
        self.blocks = nn.Sequential(*blocks)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(c, num_classes, bias=False)
        self.head_scale = head_scale
        nn.init.zeros_(self.whiten.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(F.gelu(self.whiten(x)))  # (B, C, 3, 3) for 32x32 inputs
        x = torch.amax(x, dim=(2, 3))  # (B, C): global max pooling (airbench's MaxPool2d(3) on 3x3)
        return self.fc(self.dropout(x)) * self.head_scale


def dirac_init_(net: nn.Module) -> None:
    """Identity-initialise the first ``c_in`` filters of every 3x3 conv (airbench: an implicit residual)."""
    for m in net.modules():
        if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3):
            w = m.weight.data
            nn.init.dirac_(w[:w.size(1)])


@torch.no_grad()
def init_whitening(conv: nn.Conv2d, images: torch.Tensor, eps: float = 5e-4) -> None:
    """Set ``conv`` (out = 2 * C*k*k filters of k x k) to whiten the k x k patches of ``images`` (B, C, H, W),
    already normalised: each filter is an eigenvector of the patch covariance divided by sqrt(eigenvalue + eps),
    and its negation (so that the GELU after it keeps both signs). Largest eigenvalues first."""
    c, (kh, kw) = images.shape[1], conv.kernel_size
    d = c * kh * kw
    if conv.out_channels != 2 * d or conv.in_channels != c:
        raise ValueError(f"a whitening conv for {c} channels and {kh}x{kw} patches has {2 * d} filters")
    patches = images.float().unfold(2, kh, 1).unfold(3, kw, 1)  # (B, C, H', W', kh, kw)
    patches = patches.permute(0, 2, 3, 1, 4, 5).reshape(-1, d)  # (N, C*kh*kw), C-major like the conv weight
    cov = patches.T @ patches / patches.shape[0]
    eigenvalues, eigenvectors = torch.linalg.eigh(cov.double())  # ascending
    eigenvalues, eigenvectors = eigenvalues.flip(0), eigenvectors.flip(1)
    filters = (eigenvectors.T / torch.sqrt(eigenvalues.clamp_min(0) + eps).view(-1, 1)).float()
    filters = filters.reshape(d, c, kh, kw)
    conv.weight.copy_(torch.cat([filters, -filters]))


def cnn_small(in_channels: int, num_classes: int, image_size: int, width: int = 16, hidden: int = 100,
              dropout: float = 0.0) -> nn.Sequential:
    side = image_size // 4  # two stride-2 convolutions (k 4, padding 1) halve the side twice
    return nn.Sequential(
        nn.Conv2d(in_channels, width, 4, stride=2, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(width, 2 * width, 4, stride=2, padding=1), nn.ReLU(inplace=True),
        nn.Flatten(), nn.Linear(2 * width * side * side, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout),
        nn.Linear(hidden, num_classes),
    )


def build_classifier(arch: str, in_channels: int, num_classes: int, image_size: int, **kwargs) -> nn.Module:
    """A fresh classifier ``arch`` for (in_channels, image_size, image_size) inputs and ``num_classes`` logits.

    ``kwargs`` are architecture settings stored in the model file (e.g. ``dropout``, ``widths`` for resnet)."""
    dropout = float(kwargs.pop("dropout", 0.0))
    if arch in ("mlp-1x512", "mlp-3x512"):
        net = mlp(in_channels * image_size * image_size, num_classes, 512, 1 if arch == "mlp-1x512" else 3, dropout)
    elif arch == "alexnet-small":
        net = AlexNetSmall(in_channels, num_classes, image_size, dropout)
    elif arch == "inception-small":
        net = InceptionSmall(in_channels, num_classes, dropout)
    elif arch == "mnist-cnn":
        net = MnistCNN(in_channels, num_classes, image_size, kwargs.pop("width", 32), dropout)
    elif arch == "resnet":
        widths = tuple(kwargs.pop("widths", (64, 256, 256)))
        net = FastResNet(in_channels, num_classes, widths, kwargs.pop("stem", 32), dropout=dropout)
    elif arch == "cnn-small":
        net = cnn_small(in_channels, num_classes, image_size, kwargs.pop("width", 16), kwargs.pop("hidden", 100), dropout)
    elif arch == "airbench":
        net = AirbenchNet(in_channels, num_classes, tuple(kwargs.pop("widths", AIRBENCH_WIDTHS)), dropout=dropout)
    else:
        raise UsageError(f"unknown architecture '{arch}': expected one of {', '.join(ARCHS)}")
    if kwargs:
        raise UsageError(f"architecture '{arch}' takes no setting(s) {', '.join(sorted(kwargs))}")
    return net


def count_parameters(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())
