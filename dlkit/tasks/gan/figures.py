"""Figures of a GAN run (matplotlib, Agg backend, atomic writes): losses and D outputs over training,
the 1-D toy's histogram of real against generated, the ring's scatter plot."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np

from dlkit.core.atomic import atomic_write_bytes


def _figure(ncols: int = 1, size=(5.0, 3.6)):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, ncols, figsize=(size[0] * ncols, size[1]))
    return plt, fig, axes


def _save(plt, fig, path: str | os.PathLike) -> Path:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return atomic_write_bytes(path, buf.getvalue())


def plot_history(history: list[dict], path: str | os.PathLike, loss: str) -> Path | None:
    """Left: D and G losses; right: mean D(x) and D(G(z)) (raw critic scores for hinge/wgan-gp)."""
    if not history:
        return None
    plt, fig, (a, b) = _figure(2)
    steps = [h["step"] for h in history]
    a.plot(steps, [h["loss_d"] for h in history], label="D loss")
    a.plot(steps, [h["loss_g"] for h in history], label="G loss")
    a.set_xlabel("iteration")
    a.set_title(f"losses ({loss})")
    a.legend()
    b.plot(steps, [h["d_real"] for h in history], label="D(x)")
    b.plot(steps, [h["d_fake"] for h in history], label="D(G(z))")
    b.set_xlabel("iteration")
    b.set_title("discriminator outputs" if loss in ("minimax", "non-saturating") else "critic scores")
    b.legend()
    return _save(plt, fig, path)


def plot_gaussian(real: np.ndarray, fake: np.ndarray, path: str | os.PathLike, title: str = "") -> Path:
    plt, fig, ax = _figure(1)
    lo = min(real.min(), fake.min(), -1.0)
    hi = max(real.max(), fake.max(), 9.0)
    bins = np.linspace(lo, hi, 60)
    ax.hist(real.ravel(), bins=bins, alpha=0.5, density=True, label="real N(4, 1.25)")
    ax.hist(fake.ravel(), bins=bins, alpha=0.5, density=True, label="generated")
    ax.set_title(title)
    ax.legend()
    return _save(plt, fig, path)


def plot_ring(real: np.ndarray, fake: np.ndarray, path: str | os.PathLike, title: str = "") -> Path:
    plt, fig, ax = _figure(1, size=(4.2, 4.2))
    ax.scatter(real[:, 0], real[:, 1], s=2, alpha=0.3, label="real")
    ax.scatter(fake[:, 0], fake[:, 1], s=2, alpha=0.3, label="generated")
    ax.set_xlim(-3, 3)
    ax.set_ylim(-3, 3)
    ax.set_aspect("equal")
    ax.set_title(title)
    ax.legend(loc="upper right", markerscale=4)
    return _save(plt, fig, path)


def plot_toy(name: str, real: np.ndarray, fake: np.ndarray, path: str | os.PathLike, title: str = "") -> Path:
    return (plot_gaussian if name == "gaussian" else plot_ring)(real, fake, path, title)
