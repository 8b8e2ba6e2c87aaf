"""SRGAN content losses: VGG19 feature loss (Ledig et al.'s VGG5,4) when weights exist locally, else a named pixel loss.

dlkit never downloads silently: the VGG19 ImageNet weights are used only if torchvision's cache already holds
them or ``--vgg-weights FILE`` is given. Otherwise ``--content auto`` falls back to pixel L1 (which, with the
adversarial term, is what the run's log, its events and the model card then say).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from dlkit.core.errors import ModelFileError, UsageError

_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


class ContentLoss(nn.Module):
    name = "content"


class PixelLoss(ContentLoss):
    def __init__(self, kind: str, why: str = ""):
        super().__init__()
        self.kind = kind
        self.name = f"pixel {kind}" + (f" (fallback: {why})" if why else "")

    def forward(self, sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
        return F.l1_loss(sr, hr) if self.kind == "l1" else F.mse_loss(sr, hr)


class VGGLoss(ContentLoss):
    """MSE between VGG19 relu5_4 features (before the last max-pool), scaled by 1/12.75 as in the SRGAN code."""

    name = "vgg19 relu5_4 (VGG5,4)"

    def __init__(self, state_dict: dict):
        super().__init__()
        from torchvision.models import vgg19

        net = vgg19()
        net.load_state_dict(state_dict)
        self.features = net.features[:36].eval()  # up to relu5_4
        for p in self.features.parameters():
            p.requires_grad_(False)
        self.register_buffer("mean", torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1))

    def forward(self, sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
        f = lambda x: self.features((x - self.mean) / self.std) / 12.75  # noqa: E731
        return F.mse_loss(f(sr), f(hr))


def local_vgg_weights(path: str | None) -> tuple[dict | None, str]:
    """(state dict or None, where it came from / why not). Never downloads."""
    if path:
        p = Path(path)
        if not p.exists():
            raise ModelFileError(f"--vgg-weights '{p}' does not exist")
        if p.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(p)), str(p)
        try:
            return torch.load(p, map_location="cpu", weights_only=True), str(p)
        except Exception as e:  # noqa: BLE001
            raise ModelFileError(f"--vgg-weights '{p}' cannot be read safely: {str(e).splitlines()[0]}") from None
    try:
        from torch.hub import get_dir
        from torchvision.models import VGG19_Weights

        url = VGG19_Weights.IMAGENET1K_V1.url
        cached = Path(get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]
    except Exception:  # noqa: BLE001 - an old torchvision
        return None, "torchvision has no VGG19 weights API"
    if cached.exists():
        return torch.load(cached, map_location="cpu", weights_only=True), str(cached)
    return None, f"no VGG19 ImageNet weights in {cached.parent} and no --vgg-weights file"


def make_content_loss(kind: str, vgg_weights: str | None, device, report) -> ContentLoss:
    """``auto``: VGG when weights are local, else pixel L1 with a warning; ``vgg`` insists; ``l1``/``mse`` pixel."""
    if kind not in ("auto", "vgg", "l1", "mse"):
        raise UsageError(f"--content {kind}: expected auto, vgg, l1 or mse")
    if kind in ("l1", "mse"):
        return PixelLoss(kind).to(device)
    state, where = local_vgg_weights(vgg_weights)
    if state is None:
        if kind == "vgg":
            raise ModelFileError(f"--content vgg: {where}; download them once with torchvision or pass --vgg-weights")
        report.warn(f"VGG perceptual loss unavailable ({where}); SRGAN falls back to pixel L1 + adversarial loss")
        return PixelLoss("l1", why=where).to(device)
    report.info(f"superres-train: VGG19 weights from {where}")
    return VGGLoss(state).to(device)
