"""The lecture's slide (Lotter, Kreiman and Cox 2016): rows ground truth / model A / model B over the
predicted frames, each row labelled with its MSE and sharpness (matplotlib, Agg backend, atomic write)."""

from __future__ import annotations

import io
import os
from pathlib import Path

import torch

from dlkit.core.atomic import atomic_write_bytes


def slide(rows: dict[str, torch.Tensor], scores: dict[str, dict[str, float]], path: str | os.PathLike,
          t_in: int) -> Path:
    """``rows``: name -> frames (T, C, H, W) in [0, 1]; ``scores``: name -> {"mse", "grad"} (truth: grad only)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n_rows, n_cols = len(rows), max(len(f) for f in rows.values())
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(1.1 * n_cols + 1.6, 1.25 * n_rows + 0.3), squeeze=False)
    for i, (name, frames) in enumerate(rows.items()):
        s = scores.get(name, {})
        label = "ground truth" if name == "truth" else name
        detail = (f"MSE {s['mse']:.1f}\n" if "mse" in s else "") + f"sharpness {s['grad']:.2f}"
        for j in range(n_cols):
            ax = axes[i][j]
            ax.set_xticks([])
            ax.set_yticks([])
            if j < len(frames):
                img = frames[j].permute(1, 2, 0).numpy()
                ax.imshow(img[..., 0] if img.shape[-1] == 1 else img, cmap="gray", vmin=0, vmax=1)
            if i == 0:
                ax.set_title(f"t+{j + 1}", fontsize=8)
        axes[i][0].set_ylabel(f"{label}\n{detail}", fontsize=7, rotation=0, ha="right", va="center")
    fig.suptitle(f"next {n_cols} frames after {t_in} context frames", fontsize=9)
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return atomic_write_bytes(path, buf.getvalue())
