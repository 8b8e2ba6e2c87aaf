"""The figure of `dlkit explain`: the image as the model saw it, then each method's map over it.

One row per image version (the clean image; with --compare-adversarial its adversarial version below), the
predicted or chosen class and its probability in each row's first title. Matplotlib with the Agg backend (no
display needed), written atomically as PNG (or PDF/SVG by suffix).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dlkit.core.atomic import atomic_write_bytes
from dlkit.core.errors import OutputError

FORMATS = {".png": "png", ".pdf": "pdf", ".svg": "svg"}


@dataclass
class Row:
    image: "object"  # (C, h, w) tensor in [0, 1], what the model saw
    title: str  # e.g. 'clean: "Egyptian cat" 38.9%'
    maps: dict  # method -> (h, w) tensor, non-negative


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _hwc(t) -> np.ndarray:
    a = t.detach().cpu().float().clamp(0, 1).numpy()
    return a[0] if a.shape[0] == 1 else a.transpose(1, 2, 0)


def _scaled(m) -> np.ndarray:
    """A map scaled to [0, 1] by its 99th percentile (a few extreme pixels must not blacken the rest)."""
    a = m.detach().cpu().float().numpy()
    top = float(np.percentile(a, 99)) if a.size else 0.0
    return np.clip(a / top, 0, 1) if top > 0 else np.zeros_like(a)


def _overlay(m, plt) -> np.ndarray:
    """RGBA: the 'jet' colour of each pixel's importance, as opaque as it is important (unimportant pixels
    leave the grey image visible, which matters for the speckled pixel-level maps)."""
    v = _scaled(m)
    rgba = plt.get_cmap("jet")(v)
    rgba[..., 3] = 0.15 + 0.75 * v
    return rgba


def explanation_figure(rows: list[Row], path: str | Path, suptitle: str = "", panel: float = 2.4,
                       dpi: int = 100) -> Path:
    """Write the figure: per row the image, then one panel per method (the map in 'jet' over the grey image)."""
    path = Path(path)
    kind = FORMATS.get(path.suffix.lower())
    if kind is None:
        raise OutputError(f"figure '{path}': use a .png, .pdf or .svg name")
    plt = _pyplot()
    methods = list(rows[0].maps)
    ncols = 1 + len(methods)
    fig, axes = plt.subplots(len(rows), ncols, figsize=(panel * ncols, panel * len(rows) + 0.5), squeeze=False)
    for r, row in enumerate(rows):
        img = _hwc(row.image)
        grey = img if img.ndim == 2 else img.mean(axis=2)
        ax = axes[r][0]
        ax.imshow(img, cmap="gray" if img.ndim == 2 else None, vmin=0, vmax=1)
        ax.set_title(row.title, fontsize=9)
        for c, m in enumerate(methods, start=1):
            ax = axes[r][c]
            ax.imshow(grey, cmap="gray", vmin=0, vmax=1)
            ax.imshow(_overlay(row.maps[m], plt))
            ax.set_title(m, fontsize=9)
        for ax in axes[r]:
            ax.set_xticks([])
            ax.set_yticks([])
    if suptitle:
        fig.suptitle(suptitle, fontsize=10)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format=kind, dpi=dpi)
    plt.close(fig)
    return atomic_write_bytes(path, buf.getvalue())
