"""Zhang et al. 2017, Fig. 1 as PNG files (matplotlib, Agg): (a) training loss against steps, one curve per
corruption; (b) steps to fit against the label-corruption level; (c) test error against the level."""

from __future__ import annotations

from pathlib import Path


def save_figures(runs: list, out: Path, title: str) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from dlkit.core.atomic import atomic_write

    paths = []

    def write(fig, name: str) -> None:
        fig.tight_layout()
        path = out / name
        atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=90))
        plt.close(fig)
        paths.append(path)

    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for r in runs:
        if r.curve:
            steps, losses = zip(*r.curve)
            ax.plot([s / 1000 for s in steps], losses, label=r.corruption, lw=1.2)
    ax.set(xlabel="thousand steps", ylabel="average training loss", title=f"(a) learning curves: {title}")
    ax.legend(fontsize=7)
    write(fig, "fig1a_loss.png")

    labelled = sorted((r for r in runs if r.label_level is not None), key=lambda r: r.label_level)
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    pts = [(r.label_level, r.steps_to_fit / 1000) for r in labelled if r.fitted]
    if pts:
        ax.plot(*zip(*pts), "o-", label=runs[0].arch)
        ax.legend(fontsize=7)
    ax.set(xlabel="label corruption", ylabel="thousand steps to fit", title="(b) convergence slowdown", xlim=(-0.05, 1.05))
    write(fig, "fig1b_steps_to_fit.png")

    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    if labelled:
        ax.plot([r.label_level for r in labelled], [1 - r.test_acc for r in labelled], "o-", label=runs[0].arch)
        ax.legend(fontsize=7)
    ax.set(xlabel="label corruption", ylabel="test error", title="(c) generalization error growth", xlim=(-0.05, 1.05),
           ylim=(0, 1))
    write(fig, "fig1c_test_error.png")
    return paths
