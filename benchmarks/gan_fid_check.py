"""Validate the FID pipeline (dlkit.tasks.gan.fid) on real data: CIFAR-10 train against test.

Published reference: FID(CIFAR-10 train 50k, test 10k) is about 3 with the TF Inception (e.g. clean-fid's
tables). FID is biased upwards for small N (Chong & Forsyth 2020, "Effectively unbiased FID"): it is close to
linear in 1/N, so FID at a few N extrapolates to FID_inf, which is what is compared with the published figure.
The features are computed as `dlkit gan-eval --metric fid` computes them (not cached: gan-eval caches the
statistics of the whole training set, which benchmarks/gan_fid.py measures directly at N = 10,000).

    OMP_NUM_THREADS=1 python benchmarks/gan_fid_check.py --data ../shared/data/cifar10_jpeg.npz -n 1000
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--dataset", default="cifar10")
    ap.add_argument("-n", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--draws", type=int, default=3, help="random subsets per smaller N")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(1)
    from dlkit.tasks.gan import fid as fidlib
    from dlkit.tasks.gan.evaluate import _pick
    from dlkit.vision import datasets

    t0 = time.time()
    train = datasets.load_dataset(args.dataset, "train", data=args.data).images
    test = datasets.load_dataset(args.dataset, "test", data=args.data).images
    net = fidlib.load_inception()
    feats = {}
    for name, imgs, seed in (("train", train, args.seed), ("test", test, args.seed + 1)):
        sub = _pick(imgs, args.n, seed)
        t = time.time()
        feats[name] = fidlib.features(net, sub)
        print(f"{name}: {len(sub)} images, features {feats[name].shape} in {time.time() - t:.0f} s; "
              f"feature mean {feats[name].mean():.4f}, min {feats[name].min():.4f}, share of zeros "
              f"{(feats[name] == 0).mean():.3f}", flush=True)
    rng = np.random.default_rng(0)
    ns, fids = [], []
    for n in (args.n // 4, args.n // 2, args.n):
        draws = 1 if n == args.n else args.draws
        vals = [fidlib.fid_from_features(feats["test"][rng.choice(args.n, n, replace=False)] if n < args.n else feats["test"],
                                         feats["train"][rng.choice(args.n, n, replace=False)] if n < args.n else feats["train"])
                for _ in range(draws)]
        ns.append(n)
        fids.append(float(np.mean(vals)))
        print(f"FID(test {n} vs train {n}) = {np.mean(vals):.2f}" + (f" (mean of {draws} random subsets)" if draws > 1 else ""))
    slope, intercept = np.polyfit(1.0 / np.array(ns), np.array(fids), 1)
    print(f"linear fit in 1/N: FID_inf = {intercept:.2f} (slope {slope:.0f}); published train-vs-test FID ~3 "
          f"(50k vs 10k). Total {time.time() - t0:.0f} s.")


if __name__ == "__main__":
    main()
