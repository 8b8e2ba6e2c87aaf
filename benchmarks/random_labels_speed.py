"""Training throughput (images/s) of the fit-random-labels architectures on this machine.

Measures the shared loop (dlkit.vision.classifier.train_epoch: SGD momentum 0.9, batch 128, per-image
whitening) on random 28x28x3 inputs (the paper's CIFAR-10 crop), after one warm-up step.

    OMP_NUM_THREADS=1 python benchmarks/random_labels_speed.py --threads 1 --precision fp32 bf16
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from dlkit.core.runtime import make_runtime
from dlkit.tasks.random_labels.model import build_model
from dlkit.vision.classifier import train_epoch

ARCHS = ["mlp-1x512", "mlp-3x512", "alexnet-small", "inception-small", "resnet"]


def measure(arch: str, precision: str, threads: int, steps: int, batch: int = 128) -> float:
    rt = make_runtime("cpu", precision, 0, distributed=False, threads=threads)
    model = build_model(arch, (3, 28, 28), [str(i) for i in range(10)])
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (batch * (steps + 1), 3, 28, 28), dtype=torch.uint8)
    y = torch.randint(0, 10, (len(x),))
    train_epoch(model, x[:batch], y[:batch], opt, rt, batch_size=batch, generator=g)  # warm-up
    t = time.perf_counter()
    res = train_epoch(model, x[batch:], y[batch:], opt, rt, batch_size=batch, generator=g)
    return res.images / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--precision", nargs="+", default=["fp32", "bf16"])
    ap.add_argument("--arch", nargs="+", default=ARCHS)
    ap.add_argument("--steps", type=int, default=4)
    args = ap.parse_args()
    for arch in args.arch:
        for p in args.precision:
            steps = args.steps * (8 if arch.startswith("mlp") else 1)
            print(json.dumps({"arch": arch, "precision": p, "threads": args.threads,
                              "images_per_s": round(measure(arch, p, args.threads, steps), 1)}), flush=True)


if __name__ == "__main__":
    main()
