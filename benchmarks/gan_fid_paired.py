"""Two (or more) generators compared by FID on a budget the CPU affords: N samples of each against the first N
CIFAR-10 (or MNIST) test images, with the same Inception features as `gan-eval --metric fid`, and the reference
row computed the same way (N training images against the same N test images).

FID at small N is biased upwards (by roughly the same amount for sets of the same size), so these figures rank
models but are not comparable with published FIDs; the standard figure is `gan-eval --metric fid -n 10000`.

    flock /tmp/dlkit-heavy.lock python benchmarks/gan_fid_paired.py --data cifar10_jpeg.npz -n 1000 \
        --model cifar10-dcgan --model runs/gpu/gan-c1.int8.safetensors
"""

from __future__ import annotations

import argparse
import json
import sys
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", action="append", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--dataset", default="cifar10", choices=("cifar10", "mnist"))
    ap.add_argument("-n", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    from dlkit.tasks.gan import fid as F
    from dlkit.tasks.gan.infer import load_gan, sample
    from dlkit.vision.datasets import load_dataset

    net = F.load_inception()
    t0 = time.perf_counter()
    g = torch.Generator().manual_seed(args.seed)
    test = load_dataset(args.dataset, "test", args.data).images
    train = load_dataset(args.dataset, "train", args.data).images
    test = test[torch.randperm(len(test), generator=g)[:args.n]]
    train = train[torch.randperm(len(train), generator=g)[:args.n]]

    def feats(x, what):
        f = F.features(net, x)
        print(f"{what}: {len(x)} images done ({time.perf_counter() - t0:.0f} s since the start)", file=sys.stderr,
              flush=True)
        return f

    ref = feats(test, "test")
    rows = [{"what": "real train vs test (reference)", "fid": F.fid_from_features(feats(train, "train"), ref)}]
    for spec in args.model:
        model, _ = load_gan(spec)
        rows.append({"what": spec, "fid": F.fid_from_features(feats(sample(model, args.n, seed=args.seed), spec), ref)})
    for r in rows:
        r.update(n=args.n, against=f"{args.n} {args.dataset} test images")
        print(json.dumps(r))
    print(f"{time.perf_counter() - t0:.0f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
