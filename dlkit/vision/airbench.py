"""The airbench training recipe for the shared classification loop (Jordan 2024, "94% on CIFAR-10 in 3.29
seconds on a single GPU", arXiv:2404.00498; the ``airbench94`` script of KellerJordan/cifar10-airbench).

What it adds to :func:`dlkit.vision.classifier.train_epoch`, each part switchable (:data:`PARTS`) so that its
effect can be measured:

* ``whiten-init``: the first conv (2x2, ``arch="airbench"``) is set from the eigenvectors of the training
  images' 2x2 patch covariance (:func:`dlkit.nets.classifiers.init_whitening`); ``whiten-freeze`` keeps its
  filters fixed and trains its bias for the first ``whiten_bias_epochs`` only.
* ``dirac``: identity initialisation of the first ``c_in`` filters of each 3x3 conv (an implicit residual).
* ``bn-weight-freeze``: BatchNorm scales stay at 1; only their biases train.
* ``bias-scaler``: the BatchNorm biases get 64x the learning rate (not the weight decay).
* ``label-smoothing`` (0.2), ``flip`` and ``translate`` (2 pixels, reflect padding) augmentation.
* ``lookahead``: every 5 steps after epoch 3 the weights move to an exponential average of themselves and the
  average is copied back (Zhang et al. 2019's Lookahead with an EMA); the average's decay grows as
  ``0.95**5 * progress**3``, so it moves fast early and averages strongly at the end.
* ``tta``: test-time augmentation level 2 (mirror + 1-pixel translations, 6 views; level 1 without).
* ``channels-last``: the NHWC memory format (3x faster convolutions on this CPU).

The optimizer is Nesterov SGD in airbench's decoupled parametrisation: ``lr`` is per 1,024 examples and
divided by ``1 + 1/(1 - momentum)`` (the step growth of momentum), ``weight_decay`` is per 1,024 examples and
independent of the learning rate. Here the loss is the batch *mean* (airbench sums it), so the PyTorch
learning rate is multiplied by the batch size; the update is the same. The schedule is airbench's triangle:
0.2 -> 1 over the first 23% of training, then linearly to 0.07.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
import torch.nn as nn

from dlkit.core.errors import UsageError

# name -> the RecipeConfig field it switches off (and the value that means "off")
PARTS = {
    "whiten-init": ("whiten_init", False), "whiten-freeze": ("whiten_freeze", False), "dirac": ("dirac", False),
    "bn-weight-freeze": ("bn_weight_freeze", False), "bias-scaler": ("bias_scaler", 1.0),
    "label-smoothing": ("label_smoothing", 0.0), "flip": ("flip", False), "translate": ("translate", 0),
    "lookahead": ("lookahead", False), "tta": ("tta", 0), "channels-last": ("channels_last", False),
}


@dataclass
class RecipeConfig:
    batch_size: int = 1000
    epochs: float = 9.9
    lr: float = 11.5  # per 1,024 examples, decoupled from momentum (see the module docstring)
    momentum: float = 0.85
    weight_decay: float = 0.0153  # per 1,024 examples, decoupled from the learning rate
    bias_scaler: float = 64.0  # learning-rate factor for BatchNorm biases
    label_smoothing: float = 0.2
    flip: bool = True
    translate: int = 2
    whiten_init: bool = True
    whiten_freeze: bool = True
    whiten_bias_epochs: float = 3.0
    whiten_images: int = 5000  # random training images whose patches set the whitening conv
    dirac: bool = True
    bn_weight_freeze: bool = True
    lookahead: bool = True
    lookahead_start_epochs: float = 3.0
    lookahead_every: int = 5
    lookahead_decay: float = 0.95
    lookahead_pow: float = 3.0
    warmup: float = 0.23  # triangle schedule: peak at this fraction of training
    lr_start: float = 0.2
    lr_end: float = 0.07
    tta: int = 2
    channels_last: bool = True


PRESETS = {"airbench": RecipeConfig()}


def recipe_config(preset: str = "airbench", disable: str | None = None, **overrides) -> RecipeConfig:
    """The preset with the comma-separated ``disable`` parts switched off and ``overrides`` (not None) applied."""
    if preset not in PRESETS:
        raise UsageError(f"unknown preset '{preset}': expected one of {', '.join(PRESETS)}")
    values = {f.name: getattr(PRESETS[preset], f.name) for f in fields(RecipeConfig)}
    for name in [p.strip() for p in (disable or "").split(",") if p.strip()]:
        if name not in PARTS:
            raise UsageError(f"--disable {name}: expected a comma list of {', '.join(PARTS)}")
        key, off = PARTS[name]
        values[key] = off
    values.update({k: v for k, v in overrides.items() if v is not None})
    return RecipeConfig(**values)


def prepare(model: nn.Module, images: torch.Tensor, cfg: RecipeConfig, generator: torch.Generator) -> None:
    """Initialise and freeze a :class:`~dlkit.vision.classifier.Classifier` of ``arch="airbench"`` per ``cfg``;
    ``images`` (N, C, H, W) are the training pixels (uint8 or float), of which ``cfg.whiten_images`` random ones
    set the whitening conv (the file may be sorted by class)."""
    from dlkit.nets.classifiers import dirac_init_, init_whitening
    from dlkit.vision.classifier import to_float

    net = model.net
    if cfg.dirac:
        dirac_init_(net.blocks)
    if cfg.whiten_init:
        pick = torch.randperm(images.shape[0], generator=generator)[:cfg.whiten_images]
        with torch.no_grad():
            x = model.normalize(to_float(images[pick]).to(net.whiten.weight.device))
        init_whitening(net.whiten, x)
    net.whiten.weight.requires_grad_(not cfg.whiten_freeze)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.weight.requires_grad_(not cfg.bn_weight_freeze)


def make_optimizer(model: nn.Module, cfg: RecipeConfig) -> torch.optim.SGD:
    """Nesterov SGD with two groups: BatchNorm biases (``bias_scaler`` x the learning rate, the same absolute
    decay) and the rest. Each group keeps its peak rate in ``lr_scale``; the schedule multiplies it."""
    norm_biases, other = [], []
    for m in model.modules():
        for name, p in m.named_parameters(recurse=False):
            if p.requires_grad:
                (norm_biases if isinstance(m, nn.BatchNorm2d) and name == "bias" else other).append(p)
    kilostep = 1024 * (1 + 1 / (1 - cfg.momentum))
    lr = cfg.lr / kilostep * cfg.batch_size  # per-mean-loss rate (airbench sums the loss over the batch)
    decay = cfg.weight_decay * cfg.batch_size / kilostep  # absolute decay per step at the peak rate
    groups = [{"params": norm_biases, "lr_scale": lr * cfg.bias_scaler, "weight_decay": decay / (lr * cfg.bias_scaler)},
              {"params": other, "lr_scale": lr, "weight_decay": decay / lr}]
    groups = [g for g in groups if g["params"]]
    return torch.optim.SGD(groups, lr=lr, momentum=cfg.momentum, nesterov=True)


def lr_factor(progress: float, cfg: RecipeConfig) -> float:
    """airbench's triangle: ``lr_start`` -> 1 over the first ``warmup`` of training, then linearly to ``lr_end``."""
    p = min(max(progress, 0.0), 1.0)
    if p < cfg.warmup:
        return cfg.lr_start + (1.0 - cfg.lr_start) * p / cfg.warmup
    return 1.0 + (cfg.lr_end - 1.0) * (p - cfg.warmup) / (1.0 - cfg.warmup)


class Lookahead:
    """An exponential average of the floating-point state (weights and BN statistics) that is copied back
    into the network at each update (airbench / hlb-cifar10: Lookahead with an EMA as the slow weights)."""

    def __init__(self, net: nn.Module):
        self.slow = {k: v.detach().clone() for k, v in net.state_dict().items() if v.is_floating_point()}

    @torch.no_grad()
    def update(self, net: nn.Module, decay: float) -> None:
        """slow <- decay * slow + (1 - decay) * fast; then fast <- slow (decay 1 only copies back)."""
        state = net.state_dict()
        for k, slow in self.slow.items():
            slow.lerp_(state[k], 1.0 - decay)
            state[k].copy_(slow)

    def decay(self, progress: float, cfg: RecipeConfig) -> float:
        return (cfg.lookahead_decay ** cfg.lookahead_every) * min(max(progress, 0.0), 1.0) ** cfg.lookahead_pow
