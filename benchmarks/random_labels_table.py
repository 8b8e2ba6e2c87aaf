"""Zhang et al. 2017 Table 1 (no regularisation) on this CPU: true vs random labels for the paper's networks.

Runs `dlkit fit-random-labels` once per network (true and random labels, until fit) and prints a Markdown
table beside the paper's figures. On 2 shared CPU cores the convolutional networks run on a subset.

    OMP_NUM_THREADS=1 python benchmarks/random_labels_table.py --data ../shared/data/cifar10_jpeg.npz \
        --run mlp-1x512:5000 --run mlp-3x512:5000 --run alexnet-small:1000:bf16 --run inception-small:500:bf16

Each --run is ARCH:SUBSET[:PRECISION]; results (one JSON object per run) go to OUT/<arch>-<subset>/ and stdout.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

PAPER = {  # Table 1, CIFAR-10, random labels, no regularisation: train / test accuracy (%)
    "inception-small": (100.0, 9.78), "alexnet-small": (99.82, 9.86), "mlp-3x512": (100.0, 10.48),
    "mlp-1x512": (99.34, 10.61),
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--dataset", default="cifar10")
    ap.add_argument("--run", action="append", required=True, help="ARCH:SUBSET[:PRECISION]")
    ap.add_argument("--out", default="runs/random-labels-table")
    ap.add_argument("--max-epochs", type=int, default=400)
    ap.add_argument("--corruption", default="true,random")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    rows = []
    for spec in args.run:
        arch, subset, *prec = spec.split(":")
        out = Path(args.out) / f"{arch}-{subset}"
        cmd = ["dlkit", "fit-random-labels", "--dataset", args.dataset, "--data", args.data, "--arch", arch,
               "--corruption", args.corruption, "--subset", subset, "--until-fit", "--max-epochs", str(args.max_epochs),
               "--out", str(out), "--overwrite", "--json", "--threads", str(args.threads),
               "--precision", prec[0] if prec else "fp32"]
        print("$ " + " ".join(cmd), file=sys.stderr, flush=True)
        t = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        wall = time.perf_counter() - t
        if proc.returncode != 0:
            print(proc.stderr, file=sys.stderr)
            continue
        for line in proc.stdout.splitlines():
            rec = json.loads(line)
            if rec.get("event") == "run":
                rec.update(subset=int(subset), precision=prec[0] if prec else "fp32", command_seconds=round(wall, 1))
                rows.append(rec)
                print(json.dumps(rec), flush=True)
    print("\n| network | labels | subset | train acc | test acc | epochs | steps to fit | slowdown | training time | paper (random, full data) train / test |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        paper = PAPER.get(r["arch"]) if r["corruption"] == "random" else None
        ptxt = f"{paper[0]:.2f} / {paper[1]:.2f}" if paper else ""
        fit = f"{r['steps_to_fit']:,}" if r["fitted"] else "not fitted"
        slow = f"{r['slowdown']:.2f}x" if r["slowdown"] else "-"
        print(f"| {r['arch']} | {r['corruption']} | {r['subset']:,} | {100 * r['train_acc']:.2f} | "
              f"{100 * r['test_acc']:.2f} | {r['epochs']} | {fit} | {slow} | {r['seconds']:.0f} s | {ptxt} |")


if __name__ == "__main__":
    main()
