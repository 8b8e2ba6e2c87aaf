"""Turn a gan-train run into a bundled model: the generator only (its EMA weights), fp16, with the measured
metrics in the metadata (the card beside it is written by hand from the same figures).

    python benchmarks/gan_bundle.py runs/gan-mnist/model.safetensors dlkit/zoo/mnist-dcgan.safetensors \
        --metric parzen_ll=... --headline "..."
"""

from __future__ import annotations

import argparse
import json


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("src")
    ap.add_argument("dst")
    ap.add_argument("--metrics", default="{}", help="JSON object of measured metrics")
    ap.add_argument("--headline", default=None)
    ap.add_argument("--data", default=None, help="what it was trained on, for `dlkit models`")
    args = ap.parse_args()

    import torch

    from dlkit.core.checkpoint import load_model_file, save_model

    tensors, meta = load_model_file(args.src, "gan")
    gen = {k: v for k, v in tensors.items() if k.startswith("generator.")}
    meta = {k: v for k, v in meta.items() if k not in ("format", "aliases")}
    meta["has_discriminator"] = False
    meta["metrics"] = {**meta.get("metrics", {}), **json.loads(args.metrics)}
    if args.headline:
        meta["headline"] = args.headline
    if args.data:
        meta.setdefault("training", {})["data"] = args.data
    meta.setdefault("training", {})["recipe"] = {k: v for k, v in meta["training"].get("recipe", {}).items()
                                                 if k not in ("data",)}
    save_model(args.dst, gen, meta, dtype=torch.float16)
    print(args.dst)


if __name__ == "__main__":
    main()
