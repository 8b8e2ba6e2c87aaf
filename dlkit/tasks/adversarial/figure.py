"""Figures: the lecture's x + eps sign(grad) = x_adv (Goodfellow et al. 2014, Fig. 1) and accuracy against eps.

Matplotlib with the Agg backend (no display needed), written atomically.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from dlkit.core.atomic import atomic_write_bytes
from dlkit.tasks.adversarial.spec import eps_label


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _hwc(t) -> np.ndarray:
    """(1, C, H, W) or (C, H, W) tensor in [0, 1] -> (H, W[, 3]) array for imshow."""
    a = t.detach().cpu().float().clamp(0, 1).numpy()
    a = a[0] if a.ndim == 4 else a
    return a[0] if a.shape[0] == 1 else a.transpose(1, 2, 0)


def _save(fig, path: str | Path, dpi: int, colors: int | None = None) -> Path:
    """PNG bytes of ``fig``; ``colors`` re-encodes it with an adaptive palette (noise panels compress badly)."""
    plt = _pyplot()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight", pad_inches=0.08)
    plt.close(fig)
    data = buf.getvalue()
    if colors:
        from PIL import Image

        img = Image.open(io.BytesIO(data)).convert("RGB").quantize(colors, method=Image.Quantize.MEDIANCUT)
        out = io.BytesIO()
        img.save(out, format="PNG", optimize=True)
        data = out.getvalue()
    return atomic_write_bytes(path, data)


def _caption(name: str, pred) -> str:
    return f'{name}\n"{pred.label}"\n{pred.confidence * 100:.1f}% confidence'


def lecture_figure(result, path: str | Path, model_name: str = "", noise_pred=None, dpi: int = 90) -> Path:
    """x ("label", confidence) + eps x perturbation = x_adv ("label", confidence), as on the slide.

    The middle panel is what was added, divided by eps (for FGSM: sign(grad), or minus the sign of the
    target's gradient for a targeted step), shown with grey = 0. ``noise_pred`` labels it as the slide does."""
    plt = _pyplot()
    x, adv, eps = result.x, result.adv, result.eps
    linf_budget = eps > 0 and result.method in ("fgsm", "bim", "ill", "pgd", "mifgsm")
    scale = eps if linf_budget else max(float((adv - x).abs().max()), 1e-12)  # L2 / minimal: the largest change
    shown = 0.5 + 0.5 * (adv - x) / scale
    grey = x.shape[1] == 1
    if result.method == "fgsm":
        middle = "-sign(∇ₓ J(θ, x, y_target))" if result.target is not None else "sign(∇ₓ J(θ, x, y))"
    else:
        middle = f"perturbation / {'ε' if linf_budget else 'max |δ|'} ({result.method})"
    adv_name = "x + ε sign(∇ₓ J)" if result.method == "fgsm" and result.target is None else "x_adv"
    fig, axes = plt.subplots(1, 3, figsize=(9.6, 4.0))
    panels = [(x, _caption("x", result.before[0])), (shown, middle if noise_pred is None else _caption(middle, noise_pred)),
              (adv, _caption(adv_name, result.after[0]))]
    for ax, (img, text) in zip(axes, panels):
        ax.imshow(_hwc(img), cmap="gray" if grey else None, vmin=0, vmax=1, interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_xlabel(text, fontsize=11)
    fig.subplots_adjust(wspace=0.55, left=0.02, right=0.98, top=0.86, bottom=0.2)
    boxes = [ax.get_position() for ax in axes]
    y = (boxes[0].y0 + boxes[0].y1) / 2
    fig.text((boxes[0].x1 + boxes[1].x0) / 2, y, f"+ {scale:.3g} ×", ha="center", va="center", fontsize=14)
    fig.text((boxes[1].x1 + boxes[2].x0) / 2, y, "=", ha="center", va="center", fontsize=20)
    target = f", target \"{result.target.label}\"" if result.target is not None else ""
    title = f"{result.method.upper()}, ε = {eps_label(eps)}{target}" + (f" — {model_name}" if model_name else "")
    fig.suptitle(title, fontsize=12)
    return _save(fig, path, dpi, colors=256)


def accuracy_plot(rows: list[dict], path: str | Path, title: str = "", dpi: int = 110) -> Path:
    """Accuracy under attack (%) against eps (0-255 units), one line per method; eps 0 is clean accuracy."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    methods = list(dict.fromkeys(r["method"] for r in rows))
    for m in methods:
        pts = sorted((r["eps"] * 255, r["accuracy"] * 100) for r in rows if r["method"] == m)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=m)
    ax.set_xlabel("ε (pixel levels of 255)")
    ax.set_ylabel("accuracy under attack (%)")
    ax.set_ylim(-2, 102)
    ax.grid(alpha=0.3)
    ax.legend()
    if title:
        ax.set_title(title, fontsize=10)
    return _save(fig, path, dpi)
