"""Xu et al.'s figure: the image, then one panel per word with where the decoder looked (soft attention)."""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np

from dlkit.core.atomic import atomic_write_bytes


def attention_figure(img, words: list[str], attention, path: str | Path, cols: int = 5) -> Path:
    """``img`` a PIL RGB image, ``attention`` (len(words), L) with L = h*w of the feature map -> PNG at ``path``."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from PIL import Image

    a = np.asarray(attention, dtype=np.float32)
    side = int(round(math.sqrt(a.shape[1])))
    size = (224, 224)
    base = np.asarray(img.convert("RGB").resize(size, Image.BICUBIC))
    n = len(words) + 1
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.2 * cols, 2.4 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    axes.flat[0].imshow(base)
    axes.flat[0].set_title("(image)", fontsize=10)
    for k, word in enumerate(words):
        m = a[k].reshape(side, side)
        m = m / (m.max() + 1e-8)
        # upsampled smoothly, as in the paper's figures (they also blur); bright = attended
        up = np.asarray(Image.fromarray((m * 255).astype(np.uint8)).resize(size, Image.BICUBIC), dtype=np.float32) / 255
        lit = base.astype(np.float32) * (0.2 + 0.8 * up[:, :, None])  # attended regions bright, the rest dark
        ax = axes.flat[k + 1]
        ax.imshow(lit.clip(0, 255).astype(np.uint8))
        ax.set_title(word, fontsize=10)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    plt.close(fig)
    return atomic_write_bytes(path, buf.getvalue())


def figure_path(folder: Path, image: str, used: set[str]) -> Path:
    """``folder/<stem>.png``, numbered when two inputs share a stem (the caller guards against inputs)."""
    stem = Path(image).stem or "image"
    name, k = f"{stem}.png", 1
    while name in used:
        k += 1
        name = f"{stem}-{k}.png"
    used.add(name)
    return Path(folder) / name
