"""Caption quality of trained models on their held-out images: corpus BLEU-1..4 (all references) and CIDEr-D.

The held-out images are the ones the model's training run set aside (``--test-images``, never used for model
selection; ``--split val`` for the validation images): their names are in the model file, or the split is
recomputed from the recipe stored there. Text is scored lower-cased with punctuation dropped (see
dlkit.tasks.caption.vocab); BLEU through sacreBLEU (tokenize=none), CIDEr-D as pycocoevalcap computes it.

Usage:
  python benchmarks/caption_quality.py --data ../shared/data/flickr8k-1k/captions.txt \
      --model runs/cap-att/model.safetensors --model runs/cap-nic/model.safetensors --beam 1 --beam 3
"""

from __future__ import annotations

import argparse
import json
import time


def heldout(meta: dict, data, split: str) -> list[int]:
    from dlkit.vision.caption_files import split_by_image

    files = ((meta.get("training") or {}).get("split") or {}).get("heldout_files", {}).get(split)
    if files:
        index = {p.name: i for i, p in enumerate(data.images)}
        return [index[f] for f in files]
    r = meta["training"]["recipe"]
    val = int(r["val_images"]) if r["val_images"] >= 1 else r["val_images"]
    test = int(r["test_images"]) if r["test_images"] >= 1 else r["test_images"]
    return split_by_image(len(data), val, test, r["seed"])[split]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", action="append", required=True)
    ap.add_argument("--data", default="../shared/data/flickr8k-1k/captions.txt")
    ap.add_argument("--split", default="test", choices=["test", "val"])
    ap.add_argument("--beam", type=int, action="append")
    ap.add_argument("--samples", type=int, default=5, help="captions shown per model")
    ap.add_argument("--no-repeat-ngram", type=int, default=0, help="as `dlkit caption --no-repeat-ngram` (its default: 3)")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()

    import torch

    from dlkit.core.runtime import make_runtime
    from dlkit.tasks.caption.vocab import normalize
    from dlkit.tasks.caption.features import load_pixels
    from dlkit.tasks.caption.infer import caption_pixels, load_captioner
    from dlkit.tasks.caption.metrics import caption_scores
    from dlkit.vision.caption_files import load_captions

    rt = make_runtime("cpu", "fp32", 0, distributed=False, threads=args.threads)
    data = load_captions(args.data)
    data = data.drop(data.missing())
    for spec in args.model:
        cap = load_captioner(spec)
        idx = heldout(cap.meta, data, args.split)
        pixels = torch.stack([load_pixels(data.images[i], cap.spec) for i in idx])
        refs = [[normalize(c) for c in data.captions[i]] for i in idx]
        for beam in args.beam or [3]:
            t0 = time.perf_counter()
            hyps = []
            for k in range(0, len(idx), 32):
                hyps += [c[0].caption for c in caption_pixels(cap, pixels[k : k + 32], rt, beam,
                                                              no_repeat=args.no_repeat_ngram)]
            s = caption_scores(hyps, refs)
            print(json.dumps({"model": spec, "arch": cap.cfg.arch, "split": args.split, "images": len(idx), "beam": beam,
                              "no_repeat_ngram": args.no_repeat_ngram,
                              **s, "vocab_used": len({w for h in hyps for w in h.split()}),
                              "distinct_captions": len(set(hyps)), "seconds": round(time.perf_counter() - t0, 1)}))
        for i, h in list(zip(idx, hyps))[: args.samples]:
            print(f"  {data.images[i].name}: {h}   | ref: {data.captions[i][0]}")


if __name__ == "__main__":
    main()
