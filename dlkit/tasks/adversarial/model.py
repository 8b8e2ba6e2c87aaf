"""Victims: the classifiers adv-attack attacks, each behind one interface.

A :class:`Victim` holds a module that maps pixels in [0, 1] (B, C, H, W) to logits and owns the
normalisation, the class names, the input size and how a photo is brought to that size. dlkit classifier
files, the bundled classifiers and ``imagenet-efficientnet-lite0`` come from ``dlkit.vision.classifier``;
``torchvision:NAME`` builds a torchvision model from weights already on this machine (never downloaded).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn as nn

from dlkit.core.errors import ModelFileError, UsageError


@dataclass
class Victim:
    model: nn.Module  # [0, 1] pixels (B, C, H, W) -> logits (B, K), eval mode
    classes: list[str]
    input_size: tuple[int, int, int]  # (C, H, W)
    name: str
    resize: int = 0  # shorter side before the centre crop (torchvision: 256 for 224); 0: the input size itself
    meta: dict = field(default_factory=dict)


class Normalized(nn.Module):
    """(x - mean) / std in front of a network that expects normalised inputs."""

    def __init__(self, net: nn.Module, mean, std):
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - self.mean) / self.std)


class Autocast(nn.Module):
    """Runs the wrapped model under a runtime's autocast and returns float32 logits (``--precision bf16``)."""

    def __init__(self, net: nn.Module, rt):
        super().__init__()
        self.net, self.rt = net, rt

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with self.rt.autocast():
            return self.net(x).float()


def load_victim(spec: str, device: torch.device | str = "cpu") -> Victim:
    """``torchvision:NAME[:WEIGHTS]``, a dlkit classifier file, a bundled classifier name, or
    ``imagenet-efficientnet-lite0`` -> a :class:`Victim` in eval mode on ``device``."""
    if spec.startswith("torchvision:"):
        return _torchvision_victim(spec, device)
    from dlkit.vision.classifier import load_classifier

    model = load_classifier(spec, device=device).eval()
    c, h, w = check_contract(model, spec)
    return Victim(model, list(model.classes), (c, h, w), short_name(spec), meta={"arch": getattr(model, "arch", None)})


MAX_SIDE = 1024  # pixels: the largest input side a classifier file may claim (ImageNet models take 224-518)


def check_contract(model, spec: str) -> tuple[int, int, int]:
    """The input contract a classifier file claims, checked before any image is brought to it: 1 or 3
    channels matching the network's first layer (the stored tensors), sides of 1-``MAX_SIDE`` pixels, finite
    normalisation with std > 0, as many class names as the network has outputs."""
    import math

    where = f"model file '{spec}'"
    try:
        c, h, w = (int(v) for v in model.input_size)
    except (TypeError, ValueError):
        raise ModelFileError(f"{where}: its input_size {model.input_size!r} is not [C, H, W]") from None
    if c not in (1, 3) or not (1 <= h <= MAX_SIDE and 1 <= w <= MAX_SIDE):
        raise ModelFileError(f"{where} claims inputs of {c}x{h}x{w}; adv-attack takes 1 or 3 channels and sides of "
                             f"1-{MAX_SIDE} pixels (a damaged or crafted file?)")
    first = next((p for p in model.parameters() if p.ndim == 4), None)
    if first is not None and first.shape[1] != c:
        raise ModelFileError(f"{where} claims {c}-channel inputs but its first convolution takes {first.shape[1]}")
    values = list(model.mean) + list(model.std)
    if not all(math.isfinite(v) for v in values) or min(model.std) <= 0:
        raise ModelFileError(f"{where}: its normalisation (mean {list(model.mean)}, std {list(model.std)}) must be "
                             "finite with std > 0")
    with torch.no_grad():
        k = model(torch.zeros(1, c, h, w, device=first.device if first is not None else "cpu")).shape[-1]
    if k != len(model.classes):
        raise ModelFileError(f"{where} names {len(model.classes)} classes but its network has {k} outputs")
    return c, h, w


def from_module(model: nn.Module, classes: list[str], input_size, name: str = "model") -> Victim:
    """A victim from any module on [0, 1] pixels (tests, notebooks)."""
    c, h, w = (int(v) for v in input_size)
    return Victim(model.eval(), list(classes), (c, h, w), name)


def short_name(spec: str, parent: bool = False) -> str:
    """How tables name a model: the file name without .safetensors (with its folder when ``parent``)."""
    p = Path(spec)
    if p.suffix != ".safetensors":
        return spec
    name = p.name.removesuffix(".safetensors")
    parent = parent or name == "model"  # a training run's output: runs/mnist-robust/model.safetensors
    return f"{p.parent.name}/{name}" if parent and p.parent.name else name


def _torchvision_victim(spec: str, device) -> Victim:
    """A torchvision model whose weights file is already in torch's hub cache; its categories and transforms
    come with the weights. Never downloads: a missing file is a one-line error saying where it was looked for."""
    import torchvision

    parts = spec.split(":")
    name = parts[1] if len(parts) > 1 else ""
    if not name:
        raise UsageError("--model torchvision:NAME needs a model name, e.g. torchvision:resnet50")
    try:
        enum = torchvision.models.get_model_weights(name)
    except (ValueError, KeyError):
        raise UsageError(f"--model {spec}: torchvision has no model '{name}' with pretrained weights") from None
    try:
        weights = enum[parts[2]] if len(parts) > 2 else enum.DEFAULT
    except KeyError:
        names = ", ".join(w.name for w in enum)
        raise UsageError(f"--model {spec}: '{name}' has no weights '{parts[2]}'; choose from {names}") from None
    file = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(weights.url)
    if not file.is_file():
        raise ModelFileError(f"--model {spec}: the weights {enum.__name__}.{weights.name} are not on this machine "
                             f"(looked for {file}); dlkit never downloads them, put the file there (or set TORCH_HOME)")
    try:
        net = torchvision.models.get_model(name, weights=weights)  # reads the cached file (key fix-ups included)
    except Exception as e:  # noqa: BLE001 - a damaged or foreign file
        raise ModelFileError(f"--model {spec}: cannot load {file}: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    tf = weights.transforms()
    crop = int(tf.crop_size[0])
    resize = int(tf.resize_size[0]) if tf.resize_size else crop
    model = Normalized(net, list(tf.mean), list(tf.std)).to(device).eval()
    return Victim(model, list(weights.meta["categories"]), (3, crop, crop), spec, resize=resize,
                  meta={"arch": name, "weights": weights.name})


def prepare(victim: Victim, rt, fast: bool = True) -> nn.Module:
    """The module attacks call: eval mode on the runtime's device, autocast when the precision is not fp32.

    ``fast``: BatchNorm folded into the preceding convolutions and channels-last memory for conv nets; the
    copy is used only when its logits match the original's on a random batch (else the original is)."""
    model = victim.model.to(rt.device).eval()
    if fast:
        model = _fast(model, victim.input_size, rt.device)
    return Autocast(model, rt) if rt.precision != "fp32" else model


def _fast(model: nn.Module, input_size, device) -> nn.Module:
    if not any(isinstance(m, nn.BatchNorm2d) for m in model.modules()):
        return model
    gen = torch.Generator().manual_seed(0)
    probe = torch.rand(2, *input_size, generator=gen).to(device)
    try:
        fast, folded = fold_batchnorm(model, probe[:1])
    except (RuntimeError, TypeError, ValueError):  # an exotic module graph: keep the original
        return model
    if folded == 0:
        return model
    fast = fast.to(memory_format=torch.channels_last)
    with torch.no_grad():
        ref, got = model(probe).float(), fast(probe).float()
    if not torch.allclose(ref, got, rtol=1e-3, atol=1e-3 * max(1.0, float(ref.abs().max()))):
        return model
    return fast


def fold_batchnorm(model: nn.Module, example: torch.Tensor) -> tuple[nn.Module, int]:
    """A copy of an eval-mode ``model`` with every BatchNorm that directly follows a convolution folded into
    that convolution's weights (in eval mode BN is an affine map per channel), and the count folded.

    Pairs are found by running ``example`` once with hooks: a BN whose input is the very tensor a conv
    returned. Attacks call the model twice per step (forward and backward), and each folded BN saves both.
    The caller checks that the copy computes the same logits."""
    import copy

    model = copy.deepcopy(model).eval()
    produced: dict[int, nn.Module] = {}
    pairs: list[tuple[nn.Conv2d, nn.BatchNorm2d, str]] = []
    names = {m: n for n, m in model.named_modules()}
    hooks = []

    def after_conv(mod, inp, out):
        produced[id(out)] = mod

    def before_bn(mod, inp):
        conv = produced.get(id(inp[0]))
        if conv is not None and mod.track_running_stats and mod.running_mean is not None:
            pairs.append((conv, mod, names[mod]))

    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            hooks.append(m.register_forward_hook(after_conv))
        elif isinstance(m, nn.BatchNorm2d):
            hooks.append(m.register_forward_pre_hook(before_bn))
    with torch.no_grad():
        model(example)
    for h in hooks:
        h.remove()
    convs = [c for c, _, _ in pairs]
    folded = 0
    for conv, bn, name in pairs:
        if convs.count(conv) > 1:  # one conv feeding two BNs: leave it alone
            continue
        with torch.no_grad():
            scale = bn.weight / torch.sqrt(bn.running_var + bn.eps) if bn.affine else 1 / torch.sqrt(bn.running_var + bn.eps)
            shift = (bn.bias if bn.affine else 0) - bn.running_mean * scale
            conv.weight.mul_(scale.view(-1, 1, 1, 1))
            bias = shift if conv.bias is None else conv.bias * scale + shift
            conv.bias = nn.Parameter(bias.detach().clone(), requires_grad=False)
        parent_name, _, attr = name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, attr, nn.Identity())
        folded += 1
    return model, folded
