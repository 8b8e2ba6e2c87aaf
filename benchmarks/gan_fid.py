"""FID in the standard setting for a bundled generator: N = 10,000 generated images against the Inception statistics
of the 50,000 CIFAR-10 training images, with the reference row (the 10,000 test images against the same statistics;
published about 3) and the wall time - exactly what `dlkit gan-eval --metric fid` prints, through the same code.

A heavy job: run it alone, under the project's lock, on one or two threads (the first run also computes and
caches the training statistics, 50,000 Inception passes; later runs reuse them):

    flock /tmp/dlkit-heavy.lock python benchmarks/gan_fid.py --model cifar10-dcgan --data cifar10_jpeg.npz

``--time-only K`` times K Inception forward passes at the default batch size instead and extrapolates the time of
a full evaluation from them; the printout says it is an extrapolation and gives the load it was taken under.
"""

from __future__ import annotations

import argparse
import os
import time


def _load() -> str:
    return "load average " + ", ".join(f"{x:.2f}" for x in os.getloadavg())


def time_passes(k: int, batch: int, threads: int) -> None:
    """Seconds per image of the fp32 Inception on random 32x32 images (the generator's cost is not counted)."""
    import torch

    from dlkit.tasks.gan import fid as fidlib

    torch.set_num_threads(threads)
    net = fidlib.load_inception()
    x = torch.randint(0, 256, (k, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    fidlib.features(net, x[:2], batch=2)  # TorchScript's profiling runs: not part of the steady state
    fidlib.features(net, x[:2], batch=2)
    load0, t0, done = _load(), time.perf_counter(), [0]

    def tick(m: int) -> None:  # a running figure, so a run cut short still says something
        done[0] += m
        if done[0] % 200 < m:
            print(f"  {done[0]} passes: {(time.perf_counter() - t0) / done[0] * 1000:.0f} ms/image; {_load()}",
                  flush=True)

    fidlib.features(net, x, batch=batch, progress=tick)
    per = (time.perf_counter() - t0) / k
    print(f"{k} Inception passes (batch {batch}, {threads} threads, fp32, channels_last): {per * 1000:.0f} ms/image; "
          f"{load0} before, {_load()} after")
    print(f"EXTRAPOLATION from {k} passes, not a measurement: gan-eval -n 10000 once the real statistics are cached "
          f"(10,000 generated images) ~ {10_000 * per / 60:.0f} min; the first run on a data file also computes the "
          f"50,000 training and 10,000 test images' statistics: ~ {70_000 * per / 60:.0f} min in all")


def evaluate(args) -> None:
    from dlkit.core.report import Reporter
    from dlkit.core.runtime import make_runtime
    from dlkit.tasks.gan.evaluate import EvalJob, run_eval

    job = EvalJob(model=args.model, metric="fid", dataset=args.dataset, data=args.data, n=args.n, seed=args.seed,
                  batch_size=args.batch_size)
    rt = make_runtime("cpu", "fp32", args.seed, distributed=False, threads=args.threads)
    load0, t0 = _load(), time.perf_counter()
    rows = run_eval(job, rt, Reporter())
    minutes = (time.perf_counter() - t0) / 60
    for row in rows:
        print(f"{row['what']:<36} FID {row['fid']:7.2f}  N = {row['n']}  against {row['against']}")
    print(f"{args.model}: {minutes:.1f} min wall ({args.threads} threads, batch {args.batch_size}); "
          f"{load0} at the start, {_load()} at the end")


def main() -> None:
    from dlkit.tasks.gan.fid import BATCH

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="cifar10-dcgan")
    ap.add_argument("--dataset", default="cifar10")
    ap.add_argument("--data", help="cifar10_jpeg.npz (or the model's dataset file)")
    ap.add_argument("-n", type=int, default=10_000)
    ap.add_argument("--batch-size", type=int, default=BATCH)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--time-only", type=int, metavar="K", help="time K Inception passes and extrapolate")
    args = ap.parse_args()
    if args.time_only:
        time_passes(args.time_only, args.batch_size, args.threads)
    else:
        if not args.data:
            ap.error("--data is needed for the evaluation")
        evaluate(args)


if __name__ == "__main__":
    main()
