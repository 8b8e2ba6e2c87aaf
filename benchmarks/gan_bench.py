"""Seconds per MNIST epoch for DCGAN training on this machine (the issue's CPU figure).

Times `iters` iterations of the real training step (`dlkit.tasks.gan.train.Game.iteration`: one D update on
a real and a generated batch, one G update, EMA) on MNIST after a warm-up, and scales to one epoch
(60000 // batch iterations). The 1-minute load average is printed: this machine is shared, so a figure taken
while others run is slower than the idle machine.

    OMP_NUM_THREADS=1 python benchmarks/gan_bench.py --data ../shared/data/mnist.npz --batch-size 128
    OMP_NUM_THREADS=1 python benchmarks/gan_bench.py --data ../shared/data/mnist.npz --width 32 --batch-size 64 --precision bf16
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--width", type=int, default=64, help="G and D width (dcgan default 64)")
    ap.add_argument("--precision", default="fp32")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--iters", type=int, default=30)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()

    import torch

    from dlkit.core.runtime import make_runtime
    from dlkit.tasks.gan.data import load_data
    from dlkit.tasks.gan.game import Game
    from dlkit.tasks.gan.train import TrainConfig, resolve

    rt = make_runtime(args.device, args.precision, 0, distributed=False, threads=args.threads)
    data = load_data("mnist", args.data)
    with tempfile.TemporaryDirectory() as tmp:
        cfg, mcfg = resolve(TrainConfig(batch_size=args.batch_size, g_width=args.width, d_width=args.width, out=tmp), data)
        game = Game(cfg, mcfg, data, rt, None)
        for _ in range(3):
            game.iteration(want_norm=False)
        if rt.device.type == "cuda":
            torch.cuda.synchronize()
        t, c = time.perf_counter(), time.process_time()
        for _ in range(args.iters):
            game.iteration(want_norm=False)
        if rt.device.type == "cuda":
            torch.cuda.synchronize()
        wall, cpu = (time.perf_counter() - t) / args.iters, (time.process_time() - c) / args.iters
    per_epoch = len(data) // args.batch_size
    print(f"dcgan width {args.width}, batch {args.batch_size}, {rt.precision}, {args.threads} thread(s), {rt.device}: "
          f"{wall:.3f} s/iteration wall ({cpu:.3f} s CPU) -> {wall * per_epoch:.0f} s per MNIST epoch "
          f"({per_epoch} iterations; {args.batch_size / wall:.0f} real images/s); load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
