"""Saliency maps on ImageNet photos with EfficientNet-Lite0: faithfulness and the sanity check.

Photos: 8 of scikit-image's sample photos (astronaut, chelsea, coffee, camera, rocket, motorcycle_left, horse,
coins) and, with --data FLICKR8K_FOLDER, the first 12 photos of Flickr8k's dev list (splits/dev.txt), 20 in all.

Tables (markdown on stdout, progress on stderr):
1. deletion / insertion AUC (Petsiuk et al. 2018) of gradcam and integrated-gradients beside a random map and
   a centred Gaussian, mean over the photos, and how often each method beats the random map;
2. the cascading randomisation sanity check (Adebayo et al. 2018): mean Spearman rank correlation between
   the trained and the randomised model's maps, per depth, for saliency, gradcam and guided-backprop;
3. with --time IMAGE: wall time of `dlkit explain IMAGE --method saliency,integrated-gradients,gradcam -o FIG`.

Run under the heavy-job lock:  flock /tmp/dlkit-heavy.lock python benchmarks/explain_bench.py --data .../flickr8k
"""

from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as dlkit's CLI: spinning OpenMP threads crawl on a busy CPU
SKIMAGE = ["astronaut", "chelsea", "coffee", "camera", "rocket", "motorcycle_left", "horse", "coins"]


def photos(data: Path | None, n: int):
    from PIL import Image
    from skimage import data as skdata

    def load(name):
        a = skdata.stereo_motorcycle()[0] if name == "motorcycle_left" else getattr(skdata, name)()
        return Image.fromarray(a).convert("RGB")

    out = [(name, load(name)) for name in SKIMAGE]
    if data is not None:
        names = (data / "splits" / "dev.txt").read_text().split()
        for name in names[: max(0, n - len(out))]:
            out.append((name, Image.open(data / "images" / name).convert("RGB")))
    return out[:n]


def mean(xs):
    xs = [x for x in xs if not math.isnan(x)]
    return sum(xs) / len(xs) if xs else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, help="Flickr8k folder (images/, splits/dev.txt) for photos 9-20")
    ap.add_argument("--photos", type=int, default=20)
    ap.add_argument("--auc-steps", type=int, default=50)
    ap.add_argument("--baseline", default="rise", choices=["rise", "zero", "blur"])
    ap.add_argument("--sanity-photos", type=int, default=20)
    ap.add_argument("--skip", default="", help="comma list of parts to skip: auc,sanity")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--time", type=Path, help="an image to time the command on (figure written to /tmp)")
    args = ap.parse_args()
    import torch

    from dlkit.tasks.explain.methods import Explainer
    from dlkit.tasks.explain.sanity import cascading_randomisation
    from dlkit.tasks.explain.scores import faithfulness
    from dlkit.vision.classifier import imagenet_preprocess, load_classifier

    torch.set_num_threads(args.threads)
    clf = load_classifier("imagenet-efficientnet-lite0")
    ex = Explainer(clf, clf.input_size)
    skip = set(args.skip.split(","))
    auc_rows, sanity_rows = [], []
    t_start = time.perf_counter()
    for i, (name, img) in enumerate(photos(args.data, args.photos)):
        x = imagenet_preprocess(img)[None]
        with torch.no_grad():
            p = clf(x).softmax(1)[0]
        target = int(p.argmax())
        print(f"[{i + 1}] {name}: {clf.classes[target]} {float(p[target]):.2f} ({time.perf_counter() - t_start:.0f} s)",
              file=sys.stderr, flush=True)
        maps = {m: ex.attribute(x, target, m)[0] for m in ("gradcam", "integrated-gradients")}
        if "auc" not in skip:
            auc_rows.append(faithfulness(clf, x[0], maps, target, args.baseline, args.auc_steps))
        if "sanity" not in skip and i < args.sanity_photos:
            methods = ["saliency", "gradcam", "guided-backprop"]
            sanity_rows.append(cascading_randomisation(ex, x, target, methods, seed=i))
    if auc_rows:
        print_auc(auc_rows, args)
    if sanity_rows:
        print_sanity(sanity_rows)
    if args.time:
        time_command(args.time)


def print_auc(rows, args) -> None:
    print(f"\nDeletion / insertion AUC ({args.baseline} baseline, {args.auc_steps} steps), "
          f"mean over {len(rows)} photos "
          "(deletion: lower is better; insertion: higher is better)\n")
    print("| map | deletion AUC | insertion AUC | deletion < random | insertion > random |")
    print("|---|---|---|---|---|")
    for name in ("gradcam", "integrated-gradients", "random", "gaussian"):
        d = mean([r[name]["deletion"] for r in rows])
        ins = mean([r[name]["insertion"] for r in rows])
        if name == "random":
            wins = "-", "-"
        else:
            wins = (f"{sum(r[name]['deletion'] < r['random']['deletion'] for r in rows)}/{len(rows)}",
                    f"{sum(r[name]['insertion'] > r['random']['insertion'] for r in rows)}/{len(rows)}")
        print(f"| {name} | {d:.3f} | {ins:.3f} | {wins[0]} | {wins[1]} |")


def print_sanity(rows) -> None:
    methods = list(rows[0][0].spearman)
    print(f"\nCascading randomisation (Adebayo et al. 2018): mean Spearman rank correlation with the trained model's "
          f"map, {len(rows)} photos (nan maps left out)\n")
    print("| layers randomised (top down) | down to | " + " | ".join(methods) + " |")
    print("|---|---|" + "---|" * len(methods))
    for j, first in enumerate(rows[0]):
        vals = [mean([r[j].spearman[m] for r in rows]) for m in methods]
        print(f"| {first.layers} | {first.down_to} | " + " | ".join(f"{v:.3f}" for v in vals) + " |")


def time_command(image: Path) -> None:
    cmd = ["dlkit", "explain", str(image), "--method", "saliency,integrated-gradients,gradcam", "-o",
           "/tmp/explain_bench_figure.png", "--overwrite", "--quiet"]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    up = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    print(f"\n`{' '.join(cmd)}`: {wall:.1f} s wall (process start, model load, 3 maps, figure); uptime: {up}")


if __name__ == "__main__":
    main()
