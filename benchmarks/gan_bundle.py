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

    from dlkit.core.modelfile import load_model_file, save_model

    from dlkit.tasks.gan.infer import load_gan
    from dlkit.tasks.gan.game import standing_stats

    _, meta = load_model_file(args.src, "gan")
    pair, _ = load_gan(args.src)
    # BatchNorm statistics re-estimated for the EMA weights (runs trained before dlkit did this at save time)
    g = standing_stats(pair.generator, pair.cfg, "cpu", seed=int(meta["training"]["recipe"].get("seed", 0)))
    gen = {f"generator.{k}": v for k, v in g.state_dict().items()}
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
