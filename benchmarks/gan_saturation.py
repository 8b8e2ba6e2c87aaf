"""The saturation of the minimax generator loss (Goodfellow et al. 2014, section 3), measured.

Trains the same DCGAN on MNIST for 150 iterations with `--loss minimax` and `--loss non-saturating` (same seed,
same data order) and plots the logged D(G(z)) and the generator's gradient norm: once D rejects the samples,
log(1 - D(G(z))) gives G almost no gradient, while -log D(G(z)) keeps it large.

    OMP_NUM_THREADS=1 python benchmarks/gan_saturation.py --data ../shared/data/mnist.npz
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--runs", default="runs")
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--no-train", action="store_true", help="only plot existing runs")
    ap.add_argument("--plot", default="benchmarks/gan_saturation.png")
    args = ap.parse_args()
    rows = {}
    for loss in ("minimax", "non-saturating"):
        out = Path(args.runs) / f"gan-sat-{loss}"
        if not args.no_train:
            subprocess.run([sys.executable, "-m", "dlkit", "gan-train", "--dataset", "mnist", "--data", args.data,
                            "--loss", loss, "--g-width", "32", "--d-width", "32", "--batch-size", "64",
                            "--steps", str(args.steps), "--log-every", "10", "--sample-every", str(args.steps),
                            "--threads", "1", "--quiet", "--overwrite", "--out", str(out)], check=True)
        rows[loss] = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    print("iteration | minimax D(G(z)) | minimax |grad G| | non-saturating D(G(z)) | non-saturating |grad G|")
    for a, b in zip(rows["minimax"], rows["non-saturating"]):
        if a["step"] in (10, 20, 30, 50, 100, 150):
            print(f"{a['step']:9d} | {a['d_fake']:.4f} | {a['g_grad_norm']:.3f} | {b['d_fake']:.4f} | {b['g_grad_norm']:.3f}")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.4))
    for loss, rs in rows.items():
        steps = [r["step"] for r in rs]
        ax1.plot(steps, [r["d_fake"] for r in rs], label=loss)
        ax2.semilogy(steps, [r["g_grad_norm"] for r in rs], label=loss)
    ax1.set_title("D(G(z))")
    ax2.set_title("generator gradient norm")
    for ax in (ax1, ax2):
        ax.set_xlabel("iteration")
        ax.legend()
    fig.tight_layout()
    fig.savefig(args.plot, dpi=80)
    print(args.plot)


if __name__ == "__main__":
    main()
