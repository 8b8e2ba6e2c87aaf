"""Add figures measured after bundling to a model file's metadata (metrics, headline); the stored tensors are
written back as they are (``dlkit.core.modelfile.replace_meta``), so the figures measured on the file still hold:

    python benchmarks/set_metrics.py dlkit/zoo/mnist-gan.safetensors --metrics '{"fid_n10000_vs_train": 9.9}' \
        --headline "..."
"""

from __future__ import annotations

import argparse
import json


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("path")
    ap.add_argument("--metrics", default="{}", help="JSON object merged into the file's metrics")
    ap.add_argument("--drop", nargs="*", default=[], help="metric keys to remove (figures no longer reproducible)")
    ap.add_argument("--headline", default=None)
    args = ap.parse_args()
    from dlkit.core.modelfile import read_meta, replace_meta

    meta = read_meta(args.path)
    metrics = {k: v for k, v in meta.get("metrics", {}).items() if k not in args.drop}
    meta["metrics"] = {**metrics, **json.loads(args.metrics)}
    if args.headline:
        meta["headline"] = args.headline
    replace_meta(args.path, meta)
    print(f"{args.path}: {meta['headline']}")


if __name__ == "__main__":
    main()
