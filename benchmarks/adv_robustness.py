"""Robustness table of a classifier: clean, FGSM, PGD-10 and PGD-20 accuracy at eps {2, 4, 8, 16}/255.

The issue's protocol is "the first 1,000 test images". MNIST's test set is in its original order, so that is
what is used there. The shared ``cifar10_jpeg.npz`` is sorted by class (its first 1,000 test images are all
airplanes), so for CIFAR-10 the same count is taken as the first 100 test images of each class
(``--per-class 100``). PGD: L-inf, step 2.5 eps / steps (Madry et al.), one random start, seed 0.

  OMP_NUM_THREADS=1 python benchmarks/adv_robustness.py --model mnist-cnn --dataset mnist --data mnist.npz --limit 1000
  OMP_NUM_THREADS=1 python benchmarks/adv_robustness.py --model cifar10-resnet --dataset cifar10 \
      --data cifar10_jpeg.npz --per-class 100

Prints one JSON object per (attack, eps) and then a Markdown table (stdout); progress on stderr.
"""

from __future__ import annotations

import argparse
import json
import time

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--dataset", required=True, choices=["mnist", "cifar10"])
    ap.add_argument("--data", required=True)
    ap.add_argument("--limit", type=int, default=None, help="the first N test images")
    ap.add_argument("--per-class", type=int, default=None, help="the first N test images of each class")
    ap.add_argument("--eps", default="0,2,4,8,16")
    ap.add_argument("--batch-size", type=int, default=250)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--label", default=None, help="name shown for the model (e.g. a checkpoint under runs/)")
    ap.add_argument("--attacks", default="fgsm,pgd10,pgd20", help="which of fgsm, pgd10, pgd20 to run")
    args = ap.parse_args()

    from dlkit.core.report import Reporter
    from dlkit.core.runtime import make_runtime
    from dlkit.tasks.adversarial import data, infer, model
    from dlkit.vision.attacks import AttackConfig
    from dlkit.tasks.adversarial.spec import eps_label, parse_eps_list

    rt = make_runtime(args.device, "fp32", 0, distributed=False)
    report = Reporter()
    victim = model.load_victim(args.model, rt.device)
    net = model.prepare(victim, rt)
    images, labels, _ = data.load_test_set(args.dataset, args.data, victim, args.limit, report.info, args.per_class)
    eps = parse_eps_list(args.eps)
    plans = {"fgsm": ("FGSM", [AttackConfig("fgsm")]), "pgd10": ("PGD-10", [AttackConfig("pgd", steps=10)]),
             "pgd20": ("PGD-20", [AttackConfig("pgd", steps=20)])}
    plans = [plans[a.strip()] for a in args.attacks.split(",")]
    rows = []
    t0 = time.perf_counter()
    for name, cfgs in plans:
        report.info(f"{name} on {len(labels)} images ...")
        total = infer.attack_runs(cfgs, eps, len(labels), args.batch_size)
        with report.progress(total, name) as update:
            torch.manual_seed(0)
            for r in infer.robustness(net, images, labels, cfgs, eps, args.batch_size, rt.device, progress=update):
                rows.append({**r, "attack": name, "model": args.label or args.model, "dataset": args.dataset})
    for r in rows:
        print(json.dumps(r))
    clean = next(r["accuracy"] for r in rows if r["eps"] == 0)
    head = "| model | attack | clean | " + " | ".join(f"eps {eps_label(e)}" for e in eps if e > 0) + " |"
    print(head)
    print("|" + "---|" * (3 + sum(1 for e in eps if e > 0)))
    for name, _ in plans:
        accs = [f"{r['accuracy'] * 100:.1f}" for r in rows if r["attack"] == name and r["eps"] > 0]
        print(f"| {args.label or args.model} | {name} | {clean * 100:.1f} | " + " | ".join(accs) + " |")
    print(f"# {len(labels)} test images, {time.perf_counter() - t0:.0f} s, {torch.get_num_threads()} thread(s), {rt.device}")


if __name__ == "__main__":
    main()
