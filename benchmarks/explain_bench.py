"""Saliency maps on ImageNet photos with EfficientNet-Lite0: faithfulness and the sanity check.

Photos: 8 of scikit-image's sample photos (astronaut, chelsea, coffee, camera, rocket, motorcycle_left, horse,
coins) and, with --data FLICKR8K_FOLDER, the first 12 photos of Flickr8k's dev list (splits/dev.txt), 20 in all.

Tables (markdown on stdout, progress on stderr):
1. deletion / insertion AUC (Petsiuk et al. 2018) of gradcam and integrated-gradients beside a random map, a
   random map as coarse as Grad-CAM's (7x7 cells, upsampled) and a centred Gaussian, mean over the photos, and how
   often each beats the random map. Deletion under each --deletion baseline (default: rise = the model's mean
   colour, zero = black, blur = a blurred copy); insertion from the blurred copy. Ties in a clipped map are
   broken by the method's signed evidence, as `dlkit explain --scores` does;
2. the cascading randomisation sanity check (Adebayo et al. 2018): mean Spearman rank correlation between
   the trained and the randomised model's maps, per depth, for saliency, gradcam and guided-backprop;
3. with --time IMAGE: wall time of `dlkit explain IMAGE --method saliency,integrated-gradients,gradcam -o FIG`.

Long runs split into chunks (`--start 0 --photos 10 --rows R.jsonl`, then `--start 10 --photos 20 --rows R.jsonl`):
each chunk appends its photos' scores to R.jsonl and prints the tables of every photo in it.

Run under the heavy-job lock:  flock /tmp/dlkit-heavy.lock python benchmarks/explain_bench.py --data .../flickr8k
"""

from __future__ import annotations

import argparse
import json
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


MAPS = ("gradcam", "integrated-gradients")
REFS = ("random", "random-7x7", "gaussian")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, help="Flickr8k folder (images/, splits/dev.txt) for photos 9-20")
    ap.add_argument("--photos", type=int, default=20, help="photos 1..N (with --start: start+1..N)")
    ap.add_argument("--start", type=int, default=0, help="skip the first photos (a later chunk)")
    ap.add_argument("--rows", type=Path, help="append each photo's AUCs here (JSON lines); tables over the file")
    ap.add_argument("--auc-steps", type=int, default=50)
    ap.add_argument("--deletion", default="rise,zero,blur", help="deletion baselines, the first one the main one")
    ap.add_argument("--sanity-photos", type=int, default=20)
    ap.add_argument("--skip", default="", help="comma list of parts to skip: auc,sanity")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--time", type=Path, help="an image to time the command on (figure written to /tmp)")
    args = ap.parse_args()
    import torch

    from dlkit.tasks.explain.methods import Explainer
    from dlkit.tasks.explain.sanity import cascading_randomisation
    from dlkit.vision.classifier import imagenet_preprocess, load_classifier

    torch.set_num_threads(args.threads)
    clf = load_classifier("imagenet-efficientnet-lite0")
    ex = Explainer(clf, clf.input_size)
    skip = set(args.skip.split(","))
    auc_rows, sanity_rows = [], []
    t_start = time.perf_counter()
    for i, (name, img) in enumerate(photos(args.data, args.photos)):
        if i < args.start:
            continue
        x = imagenet_preprocess(img)[None]
        with torch.no_grad():
            p = clf(x).softmax(1)[0]
        target = int(p.argmax())
        print(f"[{i + 1}] {name}: {clf.classes[target]} {float(p[target]):.2f} ({time.perf_counter() - t_start:.0f} s)",
              file=sys.stderr, flush=True)
        if "auc" not in skip:
            auc_rows.append({"photo": name, **photo_aucs(clf, ex, x, target, args, seed=i)})
            if args.rows:
                with args.rows.open("a") as f:
                    f.write(json.dumps(auc_rows[-1]) + "\n")
        if "sanity" not in skip and i < args.sanity_photos:
            methods = ["saliency", "gradcam", "guided-backprop"]
            sanity_rows.append(cascading_randomisation(ex, x, target, methods, seed=i))
    if args.rows and args.rows.exists():
        auc_rows = [json.loads(line) for line in args.rows.read_text().splitlines() if line.strip()]
    if auc_rows:
        print_auc(auc_rows, args)
    if sanity_rows:
        print_sanity(sanity_rows)
    if args.time:
        time_command(args.time)


def photo_aucs(clf, ex, x, target: int, args, seed: int) -> dict:
    """{map: {"deletion-<baseline>": auc, ..., "insertion": auc}} of one photo; the maps' ties broken by their
    signed evidence, the references' seeded by the photo's number."""
    from dlkit.tasks.explain.scores import coarse_random_map, curves, gaussian_map, random_map

    h, w = x.shape[-2:]
    maps, ties = {}, {}
    for m in MAPS:
        a, e = ex.attribute_with_evidence(x, target, m)
        maps[m], ties[m] = a[0], e[0]
    maps.update({"random": random_map(h, w, seed), "random-7x7": coarse_random_map(h, w, 7, seed),
                 "gaussian": gaussian_map(h, w)})
    out = {}
    for name, m in maps.items():
        row = {}
        for j, base in enumerate(args.deletion.split(",")):
            which = ("deletion", "insertion") if j == 0 else ("deletion",)
            cv = curves(clf, x[0], m, target, base, args.auc_steps, 16, ties.get(name), which)
            row[f"deletion-{base}"] = round(cv.deletion_auc, 4)
            if j == 0:
                row["insertion"] = round(cv.insertion_auc, 4)
        out[name] = row
    return out


def print_auc(rows, args) -> None:
    bases = args.deletion.split(",")
    names = {"rise": "mean colour (rise)", "mean": "mean colour", "zero": "black", "blur": "blurred copy"}
    ins_from = {"rise": "blurred copy", "blur": "blurred copy", "zero": "black", "mean": "mean colour"}[bases[0]]
    print(f"\nDeletion / insertion AUC ({args.auc_steps} steps), mean over {len(rows)} photos (deletion: lower is "
          f"better; insertion: higher is better); insertion from the {ins_from}; in brackets: photos where the map "
          "beats the random map\n")
    print("| map | " + " | ".join(f"deletion to {names[b]}" for b in bases) + " | insertion |")
    print("|---|" + "---|" * (len(bases) + 1))
    for name in MAPS + REFS:
        cells = []
        for key, better in [(f"deletion-{b}", -1) for b in bases] + [("insertion", 1)]:
            v = mean([r[name][key] for r in rows])
            wins = sum(better * (r[name][key] - r["random"][key]) > 0 for r in rows)
            cells.append(f"{v:.3f}" if name == "random" else f"{v:.3f} ({wins}/{len(rows)})")
        print(f"| {name} | " + " | ".join(cells) + " |")


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
