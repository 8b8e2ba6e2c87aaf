"""PGD-10 speed, dlkit against torchattacks: the same model, the same images, the same device, one run.

Both attack the same victim (pixels in [0, 1], normalisation inside) with PGD L-inf, eps 8/255, step 2/255,
10 steps, random start. torchattacks gets the model as a user would hand it over (eval mode, eager);
dlkit gets it through ``adversarial.model.prepare`` as ``adv-attack`` does (BatchNorm folded into the
convolutions, channels-last), and once more without that ("dlkit eager") to separate the attack loop from the
model preparation. Runs are interleaved (torchattacks, dlkit, dlkit eager, the order rotated each round) so
that a busy machine slows all of them alike; images/s is given for the median and for the fastest round (on a
shared machine the fastest round is the least disturbed one), and the ratios are dlkit / torchattacks for both.

  OMP_NUM_THREADS=1 python benchmarks/adv_speed.py --images 8 --rounds 5
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import numpy as np
import torch


def sample_images(victim, n: int) -> torch.Tensor:
    """``n`` photos that ship with scikit-image, brought to the model's input size (cycled when n is larger)."""
    import skimage.data
    from PIL import Image

    from dlkit.tasks.adversarial.data import fit_image
    from dlkit.vision.image import to_tensor

    names = ["chelsea", "coffee", "astronaut", "rocket", "cat", "hubble_deep_field", "immunohistochemistry", "retina"]
    out = []
    for i in range(n):
        a = getattr(skimage.data, names[i % len(names)])()
        if a.ndim == 2:
            a = np.stack([a] * 3, -1)
        img = Image.fromarray(a[..., :3])
        if i >= len(names):  # a different crop of the same photo
            w, h = img.size
            img = img.crop((i % 7 * w // 20, i % 5 * h // 20, w, h))
        out.append(to_tensor(fit_image(img, victim)))
    return torch.stack(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="imagenet-efficientnet-lite0")
    ap.add_argument("--images", type=int, default=8, help="images per attack batch")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()

    import torchattacks

    from dlkit.core.runtime import make_runtime
    from dlkit.vision.attacks import pgd
    from dlkit.tasks.adversarial.model import load_victim, prepare

    rt = make_runtime(args.device, "fp32", 0, distributed=False)
    victim = load_victim(args.model, rt.device)
    x = sample_images(victim, args.images).to(rt.device)
    with torch.no_grad():
        y = victim.model(x).argmax(1)  # attack the model's own labels
    eps, alpha = 8 / 255, 2 / 255
    fast = prepare(victim, rt)
    eager = prepare(victim, rt, fast=False)
    ta = torchattacks.PGD(victim.model, eps=eps, alpha=alpha, steps=args.steps, random_start=True)
    runs = {
        "torchattacks": lambda: ta(x, y),
        "dlkit": lambda: pgd(fast, x, y, eps, steps=args.steps, step_size=alpha),
        "dlkit eager": lambda: pgd(eager, x, y, eps, steps=args.steps, step_size=alpha),
    }
    times = {k: [] for k in runs}
    robust = {k: [] for k in runs}
    for k, f in runs.items():  # warm-up (allocator, oneDNN primitive caches)
        f()
    names = list(runs)
    for r in range(args.rounds):
        for k in names[r % len(names):] + names[:r % len(names)]:  # rotate the order: no method always goes first
            f = runs[k]
            torch.manual_seed(r)
            if rt.device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            adv = f()
            if rt.device.type == "cuda":
                torch.cuda.synchronize()
            times[k].append(time.perf_counter() - t0)
            with torch.no_grad():
                robust[k].append(float((victim.model(adv).argmax(1) == y).float().mean()))
    ips = {k: args.images / statistics.median(v) for k, v in times.items()}
    best = {k: args.images / min(v) for k, v in times.items()}
    result = {
        "model": args.model, "device": str(rt.device), "threads": torch.get_num_threads(), "images": args.images,
        "rounds": args.rounds, "attack": f"PGD-{args.steps} L-inf eps 8/255 step 2/255 random start",
        "images_per_s": {k: round(v, 3) for k, v in ips.items()},
        "images_per_s_fastest_round": {k: round(v, 3) for k, v in best.items()},
        "ratio_dlkit_vs_torchattacks": round(ips["dlkit"] / ips["torchattacks"], 3),
        "ratio_dlkit_eager_vs_torchattacks": round(ips["dlkit eager"] / ips["torchattacks"], 3),
        "ratio_fastest_dlkit_vs_torchattacks": round(best["dlkit"] / best["torchattacks"], 3),
        "ratio_fastest_dlkit_eager_vs_torchattacks": round(best["dlkit eager"] / best["torchattacks"], 3),
        "robust_accuracy_mean": {k: round(float(np.mean(v)), 4) for k, v in robust.items()},
        "seconds_per_round": {k: [round(t, 3) for t in v] for k, v in times.items()},
        "torch": torch.__version__, "torchattacks": torchattacks.__version__, "cpu": platform.processor() or platform.machine(),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
