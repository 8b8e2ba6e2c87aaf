"""``adv-train``'s configuration and the published settings it starts from. Imports no torch.

Defaults per dataset, where a field is left ``None``:

| | eps | pgd | fgsm-rs | network |
|---|---|---|---|---|
| mnist | 0.3 | 40 steps of 0.01 (Madry et al. 2018) | 1.25 eps from a random start (Wong et al. 2020) | cnn-small, Adam 5e-3 |
| cifar10 | 8/255 | 7 steps of 2/255 (Madry et al. 2018) | the same | resnet (the fast network), SGD 0.2 |

The MNIST network and optimiser are those of Wong et al.'s MNIST experiments (two strided convolutions, Adam,
cyclic learning rate, no weight decay); CIFAR-10 uses SGD with Nesterov momentum and weight decay 5e-4.

An image folder takes the cifar10 settings (mnist's for one-channel images).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Optional

from dlkit.core.errors import UsageError

METHODS = ("pgd", "fgsm-rs", "fgsm", "none")

_DEFAULTS = {
    "mnist": dict(eps=0.3, pgd_steps=40, pgd_step=0.01, arch="cnn-small", optimizer="adam", lr=5e-3, weight_decay=0.0,
                  epochs=10, flip=False, pad=0, mean=(0.0,), std=(1.0,)),
    "cifar10": dict(eps=8 / 255, pgd_steps=7, pgd_step=2 / 255, arch="resnet", optimizer="sgd", lr=0.2, weight_decay=5e-4,
                    epochs=15, flip=True, pad=4, mean=(0.4914, 0.4822, 0.4465), std=(0.2470, 0.2435, 0.2616)),
}


@dataclass
class AdvTrainConfig:
    dataset: Optional[str] = "mnist"  # mnist | cifar10 | None (an image folder in `data`)
    data: Optional[str] = None
    method: str = "pgd"
    eps: Optional[float] = None  # [0, 1] units
    steps: Optional[int] = None  # attack iterations (fgsm-rs, fgsm: 1)
    step_size: Optional[float] = None  # [0, 1] units
    eps_warmup: int = 0  # epochs over which eps rises linearly from 0
    arch: Optional[str] = None
    width: Optional[int] = None  # first conv width of mnist-cnn (32) / cnn-small (16)
    epochs: Optional[int] = None
    batch_size: int = 128
    optimizer: Optional[str] = None  # sgd (Nesterov momentum 0.9) | adam
    lr: Optional[float] = None  # peak of the cyclic schedule
    weight_decay: Optional[float] = None
    flip: Optional[bool] = None
    pad: Optional[int] = None  # random translations of up to pad pixels
    mean: Optional[tuple] = None
    std: Optional[tuple] = None
    subset: Optional[int] = None
    test_subset: Optional[int] = None
    overfit_check: bool = True
    overfit_drop: float = 0.2  # Wong et al.'s release stops when PGD accuracy falls by 0.2
    check_n: int = 512  # images in the fixed training batch the monitor attacks
    eval_n: int = 1000  # test images attacked with PGD at the end (0: none)
    eval_steps: int = 20
    max_time: Optional[float] = None  # seconds, this invocation
    seed: int = 0
    resume: bool = False
    out: str = "runs/adv-train"
    save_dtype: str = "fp32"
    init: Optional[str] = None  # a classifier file (same arch and width) whose weights the run starts from

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        """One line for each setting that cannot work (before any data is read)."""
        if self.method not in METHODS:
            raise UsageError(f"--method {self.method}: expected one of {', '.join(METHODS)}")
        if self.dataset is not None and self.dataset not in _DEFAULTS:
            raise UsageError(f"--dataset {self.dataset}: expected mnist or cifar10 (or an image folder as --data)")
        for name in ("eps", "step_size", "lr", "weight_decay", "overfit_drop"):
            v = getattr(self, name)
            if v is not None and not (isinstance(v, (int, float)) and math.isfinite(v)):
                raise UsageError(f"--{name.replace('_', '-')} {v}: not a finite number")
        if self.eps is not None and not 0 < self.eps <= 1:
            raise UsageError(f"--eps {self.eps:g}: must be in (0, 1] ([0, 1] pixel units; 0.3 or 8/255)")
        if self.step_size is not None and not 0 < self.step_size <= 1:
            raise UsageError(f"--step-size {self.step_size:g}: must be in (0, 1]")
        if self.lr is not None and not 0 < self.lr <= 10:
            raise UsageError(f"--lr {self.lr:g}: must be in (0, 10]")
        if self.weight_decay is not None and not 0 <= self.weight_decay < 1:
            raise UsageError(f"--weight-decay {self.weight_decay:g}: must be in [0, 1)")
        if self.steps is not None and not 1 <= self.steps <= 1000:
            raise UsageError(f"--attack-steps {self.steps}: must be 1-1000")
        if self.method in ("fgsm-rs", "fgsm") and self.steps not in (None, 1):
            raise UsageError(f"--attack-steps is for --method pgd ({self.method} takes one step)")
        if not 1 <= self.batch_size <= 65536:
            raise UsageError(f"--batch-size {self.batch_size}: must be 1-65536")
        if self.optimizer not in (None, "sgd", "adam"):
            raise UsageError(f"--optimizer {self.optimizer}: expected sgd or adam")
        if self.width is not None and not 1 <= self.width <= 512:
            raise UsageError(f"--width {self.width}: must be 1-512")
        if self.eval_n < 0 or not 1 <= self.eval_steps <= 1000 or not 1 <= self.check_n <= 100_000:
            raise UsageError("--eval-images must be >= 0 (and the monitor's batch 1-100000)")


def resolve(cfg: AdvTrainConfig, channels: int) -> AdvTrainConfig:
    """``cfg`` with every ``None`` replaced by the published default for its dataset and method."""
    d = _DEFAULTS[cfg.dataset] if cfg.dataset else _DEFAULTS["mnist" if channels == 1 else "cifar10"]
    eps = cfg.eps if cfg.eps is not None else d["eps"]
    if cfg.method == "pgd":
        steps = cfg.steps or d["pgd_steps"]
        # Madry et al.'s own step for their eps and step count, else theirs as a rule: 2.5 eps / steps (a fixed
        # 0.01 with 10 steps would not leave a third of the eps box)
        step = cfg.step_size if cfg.step_size is not None else (
            d["pgd_step"] if cfg.eps is None and steps == d["pgd_steps"] else 2.5 * eps / steps)
    else:
        steps = 1
        step = cfg.step_size if cfg.step_size is not None else (1.25 * eps if cfg.method == "fgsm-rs" else eps)
    arch = cfg.arch or d["arch"]
    mean = tuple(cfg.mean) if cfg.mean else (d["mean"] if channels == len(d["mean"]) else (0.5,) * channels)
    std = tuple(cfg.std) if cfg.std else (d["std"] if channels == len(d["std"]) else (0.25,) * channels)
    return replace(cfg, eps=eps, steps=steps, step_size=step, arch=arch, lr=cfg.lr or d["lr"],
                   optimizer=cfg.optimizer or d["optimizer"],
                   weight_decay=d["weight_decay"] if cfg.weight_decay is None else cfg.weight_decay,
                   epochs=cfg.epochs or d["epochs"], flip=d["flip"] if cfg.flip is None else cfg.flip,
                   pad=d["pad"] if cfg.pad is None else cfg.pad, mean=mean, std=std)
