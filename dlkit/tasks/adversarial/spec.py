"""Parsing what the user typed: eps values, method lists, image transformations. Imports no torch.

Everything here is plain Python so that ``cli.py`` can refuse a bad ``--eps`` before torch loads.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from dlkit.core.errors import UsageError

# fgsm/bim/ill: Goodfellow et al. 2014, Kurakin et al. 2016; pgd/pgd-l2: Madry et al. 2018;
# mifgsm: Dong et al. 2018; apgd-ce: Croce & Hein 2020; deepfool: Moosavi-Dezfooli et al. 2016; cw: Carlini & Wagner 2017 (L2).
METHODS = ("fgsm", "bim", "ill", "pgd", "pgd-l2", "mifgsm", "apgd-ce", "deepfool", "cw")
TARGETED = ("fgsm", "bim", "pgd", "pgd-l2", "mifgsm", "cw")  # methods that accept --target
TRANSFORMS = {"jpeg": "JPEG quality 1-100", "resize": "down-and-up scale factor in (0, 1]",
              "blur": "Gaussian blur radius in pixels", "noise": "Gaussian noise std in 0-255 units"}


def parse_eps(text: str, what: str = "--eps") -> float:
    """``8`` (0-255 pixel units), ``8/255`` or ``0.007`` (fractions of the [0, 1] range) -> a float in [0, 1].

    A plain integer, or a number above 1, is in pixel units; a number with a decimal point up to 1 is
    already a fraction (so ``1`` is 1/255 but ``1.0`` is the whole range)."""
    s = str(text).strip()
    if not s:
        raise UsageError(f"{what}: empty value; give e.g. 8, 8/255 or 0.03")
    try:
        if "/" in s:
            num, den = (float(p) for p in s.split("/", 1))
            if den == 0:
                raise UsageError(f"{what} {s}: division by zero")
            value = num / den
            pixels = value * 255
        else:
            value = float(s)
            is_fraction = ("." in s or "e" in s.lower()) and abs(value) <= 1
            pixels = value * 255 if is_fraction else value
            value = value if is_fraction else value / 255
    except ValueError:
        raise UsageError(f"{what} {s}: not a number; give e.g. 8, 8/255 or 0.03") from None
    if not math.isfinite(value):
        raise UsageError(f"{what} {s}: not a finite number")
    if value < 0:
        raise UsageError(f"{what} {s}: must not be negative")
    if pixels > 255 + 1e-9:
        raise UsageError(f"{what} {s}: above 255 (the whole pixel range); give at most 255 or 1.0")
    return value


def parse_eps_list(text: str, what: str = "--eps") -> list[float]:
    """``0,2,4,8,16`` -> sorted unique eps values in [0, 1] units."""
    parts = [p for p in str(text).split(",") if p.strip()]
    if not parts:
        raise UsageError(f"{what}: empty list; give e.g. 0,2,4,8,16")
    values = sorted({round(parse_eps(p, what), 12) for p in parts})
    return values


def parse_methods(text: str) -> list[str]:
    """``fgsm,pgd`` -> ['fgsm', 'pgd'] (order kept, duplicates dropped); ``pgd-linf`` is ``pgd``, ``pgdl2`` ``pgd-l2``."""
    aliases = {"pgd-linf": "pgd", "pgdl2": "pgd-l2", "pgd_l2": "pgd-l2", "i-fgsm": "bim", "ifgsm": "bim",
               "mi-fgsm": "mifgsm", "cw-l2": "cw", "iter-ll": "ill", "apgd": "apgd-ce"}
    out: list[str] = []
    for p in str(text).split(","):
        m = aliases.get(p.strip().lower(), p.strip().lower())
        if not m:
            continue
        if m not in METHODS:
            raise UsageError(f"--method {p.strip()}: unknown attack; choose from {', '.join(METHODS)}")
        if m not in out:
            out.append(m)
    if not out:
        raise UsageError(f"--method: empty; choose from {', '.join(METHODS)}")
    return out


@dataclass(frozen=True)
class Transform:
    """One physical-world-style change applied to the adversarial image (Kurakin et al. 2016)."""

    kind: str
    value: float

    def __str__(self) -> str:
        return f"{self.kind}:{self.value:g}"


def parse_transforms(text: str | None) -> list[Transform]:
    """``jpeg:75,resize:0.5,blur:1`` -> a chain of transforms applied in that order."""
    if not text:
        return []
    out = []
    for part in str(text).split(","):
        part = part.strip()
        if not part:
            continue
        kind, _, val = part.partition(":")
        kind = kind.strip().lower()
        if kind not in TRANSFORMS:
            raise UsageError(f"--transform {part}: unknown; choose from {', '.join(f'{k}:N' for k in TRANSFORMS)}")
        try:
            value = float(val)
        except ValueError:
            raise UsageError(f"--transform {part}: expected {kind}:NUMBER ({TRANSFORMS[kind]})") from None
        ok = {"jpeg": 1 <= value <= 100, "resize": 0 < value <= 1, "blur": 0 <= value <= 100,
              "noise": 0 <= value <= 255}[kind]
        if not ok or not math.isfinite(value):
            raise UsageError(f"--transform {part}: out of range ({TRANSFORMS[kind]})")
        out.append(Transform(kind, value))
    return out


def eps_label(eps: float) -> str:
    """How an eps is shown to people: ``8/255`` when it is a whole number of pixel levels, else ``0.007``."""
    px = eps * 255
    if abs(px - round(px)) < 1e-6:
        return f"{int(round(px))}/255" if round(px) else "0"
    return f"{eps:.4g}"
