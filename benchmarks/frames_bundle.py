"""Turn a frame-predict-train run into a bundled model: int8 weights (the zoo's budget), the test figures of
`frame-predict --eval` and the hardware in the metadata (the card beside it is written from the same figures).

    python benchmarks/frames_bundle.py runs/gpu/pack/fr-mse-model.safetensors dlkit/zoo/moving-mnist-mse.safetensors \
        --test '{"mse": 75.55, ...}' --hardware "one NVIDIA H200 ..." --headline "..."
"""

from __future__ import annotations

import argparse
import json


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("src")
    ap.add_argument("dst")
    ap.add_argument("--test", default="{}", help="JSON object: frame-predict --eval's row for this model")
    ap.add_argument("--hardware", default=None)
    ap.add_argument("--init", default=None, help="the bundled name of the model it was fine-tuned from")
    ap.add_argument("--headline", default=None)
    ap.add_argument("--save-dtype", default="int8", choices=("int8", "fp16", "fp32"))
    args = ap.parse_args()
    from dlkit.core.modelfile import load_model_file, save_model

    tensors, meta = load_model_file(args.src, "frames")
    meta = {k: v for k, v in meta.items() if k not in ("format", "aliases", "int8")}
    training = meta.setdefault("training", {})
    recipe = training.get("recipe", {})
    recipe["data"] = "mnist.npz"
    if args.init:
        training["init"] = {"name": args.init}
        recipe["init"] = args.init
        recipe["preset"] = None  # the shape came from the init model (its config is in "config")
    recipe["save_dtype"] = args.save_dtype
    if args.hardware:
        training["hardware"] = args.hardware
    meta["metrics"] = {**meta.get("metrics", {}), **{f"test_{k}": v for k, v in json.loads(args.test).items()}}
    if args.headline:
        meta["headline"] = args.headline
    save_model(args.dst, tensors, meta, dtype=args.save_dtype)
    print(args.dst)


if __name__ == "__main__":
    main()
