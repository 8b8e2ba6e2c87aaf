"""The lecture's comparison panel: bicubic | model | original, with PSNR/SSIM (Y) under each upscaled image."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from dlkit.core.checkpoint import atomic_write_bytes


def write_panel(path: str | Path, images: list[tuple[str, np.ndarray, tuple[float, float] | None]], scale: int) -> Path:
    """``images``: (title, (H, W, 3) uint8, (psnr, ssim) or None). Written atomically as PNG/JPEG/PDF by suffix."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    h, w = images[0][1].shape[:2]
    n = len(images)
    fig_w = 4.0 * n
    fig, axes = plt.subplots(1, n, figsize=(fig_w, 4.0 * h / w + 0.8), squeeze=False)
    for ax, (title, img, metrics) in zip(axes[0], images):
        ax.imshow(img, interpolation="nearest")
        ax.set_title(title, fontsize=12)
        ax.set_xticks([])
        ax.set_yticks([])
        if metrics is not None:
            ax.set_xlabel(f"{metrics[0]:.2f} dB / {metrics[1]:.4f}", fontsize=11)
        else:
            ax.set_xlabel(" ", fontsize=11)
    fig.suptitle(f"x{scale} super-resolution (PSNR / SSIM on Y, {scale} px shaved)", fontsize=10)
    fig.tight_layout()
    buf = io.BytesIO()
    fmt = Path(path).suffix.lower().lstrip(".") or "png"
    fig.savefig(buf, format="jpeg" if fmt == "jpg" else fmt, dpi=100)
    plt.close(fig)
    return atomic_write_bytes(path, buf.getvalue())
