"""Caption quality of trained models on their held-out images: corpus BLEU-1..4 (all references) and CIDEr-D.

The held-out images are the ones the model's training run set aside: ``--split val`` (default) for the
validation images (Flickr8k's dev list), ``--split test`` for ``--test-images``, ``--split dev`` for the caption
file's own validation list (to score a model trained on another split). Their names are in the model
file, or the split is recomputed from the recipe stored there. Text is scored lower-cased with punctuation
dropped (see dlkit.tasks.caption.vocab); BLEU through sacreBLEU (tokenize=none), CIDEr-D as pycocoevalcap
computes it. Decoding defaults to the `caption` command's (beam 3, --no-repeat-ngram 3, length penalty 0);
every --beam x --length-penalty pair is scored. With --feature-cache (caption-train's folder) the encoder's
cached feature maps are used instead of running it again (same numbers for square photos such as Flickr8k's).

Usage:
  python benchmarks/caption_quality.py --data ../shared/data/flickr8k/captions.csv \
      --model runs/cap-att/model.safetensors --model runs/cap-nic/model.safetensors --beam 1 --beam 3 --beam 5 \
      --length-penalty 0 --length-penalty 0.6 --feature-cache runs/cap/features
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # dlkit from this checkout

def heldout(meta: dict, data, split: str) -> list[int]:
    from dlkit.vision.caption_files import split_by_image

    if split == "dev":  # the caption file's own validation list, whatever the model's training run held out
        return list(data.splits["val"])
    files = ((meta.get("training") or {}).get("split") or {}).get("heldout_files", {}).get(split)
    if files:
        index = {p.name: i for i, p in enumerate(data.images)}
        return [index[f] for f in files]
    r = meta["training"]["recipe"]
    val = int(r["val_images"]) if r["val_images"] >= 1 else r["val_images"]
    test = int(r["test_images"]) if r["test_images"] >= 1 else r["test_images"]
    return split_by_image(len(data), val, test, r["seed"])[split]


def inputs(cap, data, idx: list[int], cache_dir: str | None):
    """Encoder features (N, L, C) of images ``idx``: from caption-train's cache when it holds this dataset, else
    computed (batches of 32)."""
    import torch

    from dlkit.tasks.caption.encoder import feature_map
    from dlkit.tasks.caption.features import cache_key, load_pixels

    if cache_dir:
        from safetensors.torch import load_file

        path = Path(cache_dir) / f"{cache_key(cap.spec, list(data.images), False)}.safetensors"
        if path.is_file():
            return load_file(str(path))["features"][idx].float()
        print(f"no feature cache {path}; running the encoder", flush=True)
    out = []
    with torch.no_grad():
        for k in range(0, len(idx), 32):
            x = torch.stack([load_pixels(data.images[i], cap.spec) for i in idx[k : k + 32]])
            out.append(feature_map(cap.encoder, x).float())
    return torch.cat(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", action="append", required=True)
    ap.add_argument("--data", default="../shared/data/flickr8k/captions.csv")
    ap.add_argument("--split", default="val", choices=["test", "val", "dev"],
                    help="the model's held-out test or validation images, or the data's own dev list")
    ap.add_argument("--beam", type=int, action="append")
    ap.add_argument("--length-penalty", type=float, action="append", help="GNMT alpha, as `dlkit caption` (0)")
    ap.add_argument("--samples", type=int, default=5, help="captions shown per model")
    ap.add_argument("--no-repeat-ngram", type=int, default=3, help="as `dlkit caption --no-repeat-ngram` (3)")
    ap.add_argument("--feature-cache", default=None, help="caption-train's --feature-cache folder")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()

    from dlkit.core.runtime import make_runtime
    from dlkit.tasks.caption.infer import caption_features, load_captioner
    from dlkit.tasks.caption.metrics import caption_scores
    from dlkit.tasks.caption.vocab import normalize
    from dlkit.vision.caption_files import load_captions

    make_runtime("cpu", "fp32", 0, distributed=False, threads=args.threads)
    data = load_captions(args.data)
    data = data.drop(data.missing())
    for spec in args.model:
        cap = load_captioner(spec)
        idx = heldout(cap.meta, data, args.split)
        feats = inputs(cap, data, idx, args.feature_cache)
        if cap.cfg.arch == "nic":
            feats = feats.mean(1)
        refs = [[normalize(c) for c in data.captions[i]] for i in idx]
        for beam in args.beam or [3]:
            for alpha in args.length_penalty or [0.0]:
                t0 = time.perf_counter()
                hyps = []
                for k in range(0, len(idx), 64):
                    hyps += [c[0].caption for c in caption_features(cap, feats[k : k + 64], beam, alpha=alpha,
                                                                    no_repeat=args.no_repeat_ngram)]
                s = caption_scores(hyps, refs)
                print(json.dumps({"model": spec, "arch": cap.cfg.arch, "split": args.split, "images": len(idx),
                                  "beam": beam, "length_penalty": alpha, "no_repeat_ngram": args.no_repeat_ngram,
                                  **s, "mean_words": round(sum(len(h.split()) for h in hyps) / len(hyps), 2),
                                  "vocab_used": len({w for h in hyps for w in h.split()}),
                                  "distinct_captions": len(set(hyps)), "seconds": round(time.perf_counter() - t0, 1)}),
                      flush=True)
        for i, h in list(zip(idx, hyps))[: args.samples]:
            print(f"  {data.images[i].name}: {h}   | ref: {data.captions[i][0]}")


if __name__ == "__main__":
    main()
