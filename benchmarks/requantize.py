"""Store a dlkit model file in another weight type (how a bundled model is made smaller), keeping its metadata:

    python benchmarks/requantize.py runs/gpu/fr-mse.safetensors runs/gpu/fr-mse.int8.safetensors --dtype int8

int8 stores each weight matrix (and convolution kernel, per output channel) as int8 with one fp16 scale per row,
the rest fp16 (``dlkit.core.modelfile.quantize_int8``). Measure the model again after it: the change is not free.
"""

from __future__ import annotations

import argparse
import os


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("src")
    ap.add_argument("dst")
    ap.add_argument("--dtype", choices=("fp16", "int8", "fp32"), default="int8")
    args = ap.parse_args()
    from dlkit.core.modelfile import load_model_file, save_model

    tensors, meta = load_model_file(args.src)
    meta = {k: v for k, v in meta.items() if k not in ("format", "aliases", "int8")}
    save_model(args.dst, tensors, meta, dtype=args.dtype)
    print(f"{args.dst}: {os.path.getsize(args.src) / 1e6:.2f} MB -> {os.path.getsize(args.dst) / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
