"""Squash, centre crop or pad: how should a photo that is not square reach the 224x224 encoder?

Flickr8k's copies were squashed to 224x224 from photos of other shapes (mostly 4:3 and 3:2 landscapes), so
the model only ever saw squashed photos. Two measurements:

1. Dev photos given back an aspect ratio (``--aspect``: each 224x224 dev photo resized to e.g. 336x224, 3:2,
   which approximates the photo before squashing), then fed by each method; corpus BLEU and CIDEr-D
   against the dev references. squash gives back (nearly) the dev input itself.
2. The captions of a few real photos of other shapes (scikit-image's, when it is installed), by method.

Usage:
  python benchmarks/caption_preprocess.py --model runs/cap-att/model.safetensors \
      --data ../shared/data/flickr8k/captions.csv --images 300 --aspect 1.5 --aspect 0.67
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # dlkit from this checkout
METHODS = ("squash", "crop", "pad")


def reshaped(path, aspect: float):
    """A 224x224 dev photo given the aspect ratio ``aspect`` (width / height) by enlarging one side."""
    from PIL import Image

    img = Image.open(path).convert("RGB")
    w, h = img.size
    size = (round(w * aspect), h) if aspect >= 1 else (w, round(h / aspect))
    return img.resize(size, Image.BICUBIC)


def skimage_photos() -> dict:
    try:
        from skimage import data
    except ImportError:
        return {}
    from PIL import Image

    return {n: Image.fromarray(getattr(data, n)()) for n in ("chelsea", "coffee", "rocket", "astronaut", "camera")}


def caption_images(cap, images: list, method: str, beam: int) -> list[str]:
    import torch

    from dlkit.tasks.caption.encoder import feature_map
    from dlkit.tasks.caption.features import preprocess
    from dlkit.tasks.caption.infer import caption_features

    s = cap.spec
    out = []
    with torch.no_grad():
        for k in range(0, len(images), 32):
            x = torch.stack([preprocess(im, s.size, s.mean, s.std, method) for im in images[k : k + 32]])
            f = feature_map(cap.encoder, x).float()
            f = f.mean(1) if cap.cfg.arch == "nic" else f
            out += [c[0].caption for c in caption_features(cap, f, beam, no_repeat=3)]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", default="../shared/data/flickr8k/captions.csv")
    ap.add_argument("--images", type=int, default=300, help="the first N dev photos")
    ap.add_argument("--aspect", type=float, action="append", help="width / height given back (default 1.5)")
    ap.add_argument("--beam", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    from dlkit.core.runtime import make_runtime
    from dlkit.tasks.caption.infer import load_captioner
    from dlkit.tasks.caption.metrics import caption_scores
    from dlkit.tasks.caption.vocab import normalize
    from dlkit.vision.caption_files import load_captions

    make_runtime("cpu", "fp32", 0, distributed=False, threads=args.threads)
    cap = load_captioner(args.model)
    data = load_captions(args.data)
    idx = data.splits["val"][: args.images]
    refs = [[normalize(c) for c in data.captions[i]] for i in idx]
    for aspect in args.aspect or [1.5]:
        photos = [reshaped(data.images[i], aspect) for i in idx]
        for method in METHODS:
            t0 = time.perf_counter()
            hyps = caption_images(cap, photos, method, args.beam)
            print(json.dumps({"aspect": aspect, "resize": method, "images": len(idx), **caption_scores(hyps, refs),
                              "seconds": round(time.perf_counter() - t0, 1)}), flush=True)
    photos = skimage_photos()
    for method in METHODS:
        for (name, im), c in zip(photos.items(), caption_images(cap, list(photos.values()), method, args.beam)):
            print(f"{method}\t{name} {im.size[0]}x{im.size[1]}\t{c}", flush=True)


if __name__ == "__main__":
    main()
