"""The standard-model robustness row of a CIFAR-10 classifier at eps 8/255 (L-inf): clean, FGSM, PGD-10 and
PGD-20 (step 2/255, one uniform random start, Madry et al. 2018) with dlkit's attacks, and torchattacks' PGD-10
(same eps, step and random start) on the same images as a cross-check. Networks are attacked without TTA.

    python benchmarks/cifar_robustness.py --model cifar10-airbench --data cifar10_jpeg.npz            # all 10,000
    python benchmarks/cifar_robustness.py --model cifar10-airbench --data cifar10_jpeg.npz --per-class 100

``cifar10_jpeg.npz`` is sorted by class, so a subset is the first N test images of each class. Prints one JSON
object (stdout) and a Markdown row; progress on stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch


def attacks(eps: float, step: float):
    """name -> (model, x, y) -> adversarial x, for the row's columns."""
    import torchattacks

    from dlkit.vision import attacks as A

    def ta_pgd(model, x, y):
        return torchattacks.PGD(model, eps=eps, alpha=step, steps=10, random_start=True)(x, y)

    return {"fgsm": lambda m, x, y: A.fgsm(m, x, y, eps),
            "pgd10": lambda m, x, y: A.pgd(m, x, y, eps, steps=10, step_size=step),
            "pgd20": lambda m, x, y: A.pgd(m, x, y, eps, steps=20, step_size=step),
            "torchattacks_pgd10": ta_pgd}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--per-class", type=int, default=None, help="the first N test images of each class")
    ap.add_argument("--eps", type=float, default=8.0, help="in pixel levels of 255")
    ap.add_argument("--step", type=float, default=2.0, help="PGD step, in pixel levels of 255")
    ap.add_argument("--batch-size", type=int, default=250)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    from dlkit.vision.classifier import load_classifier, to_float
    from dlkit.vision.datasets import load_dataset

    dev = torch.device(args.device)
    model = load_classifier(args.model).float().eval().to(dev)
    test = load_dataset("cifar10", "test", args.data)
    if args.per_class:
        keep = torch.cat([torch.nonzero(test.labels == k).flatten()[:args.per_class] for k in range(len(test.classes))])
        test = test.subset(keep)
    eps, step = args.eps / 255, args.step / 255
    correct = {"clean": 0, **{k: 0 for k in attacks(eps, step)}}
    t0 = time.perf_counter()
    torch.manual_seed(args.seed)
    for i in range(0, len(test), args.batch_size):
        x = to_float(test.images[i:i + args.batch_size]).to(dev)
        y = test.labels[i:i + args.batch_size].long().to(dev)
        with torch.no_grad():
            correct["clean"] += int((model(x).argmax(1) == y).sum())
        for name, attack in attacks(eps, step).items():
            adv = attack(model, x, y)
            assert (adv - x).abs().max() <= eps + 1e-6
            with torch.no_grad():
                correct[name] += int((model(adv).argmax(1) == y).sum())
        done = min(i + args.batch_size, len(test))
        print(f"{done}/{len(test)} " + " ".join(f"{k} {v / done:.4f}" for k, v in correct.items()) +
              f" | {time.perf_counter() - t0:.0f}s", file=sys.stderr, flush=True)
    n = len(test)
    row = {"model": args.model, "images": n, "eps": f"{args.eps:g}/255", "step": f"{args.step:g}/255",
           **{k: round(v / n, 4) for k, v in correct.items()}, "seconds": round(time.perf_counter() - t0)}
    print(json.dumps(row), flush=True)
    print(f"| {args.model} | {n:,} | {100 * row['clean']:.2f}% | {100 * row['fgsm']:.2f}% | {100 * row['pgd10']:.2f}% | "
          f"{100 * row['pgd20']:.2f}% | {100 * row['torchattacks_pgd10']:.2f}% |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
