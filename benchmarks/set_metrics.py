"""Add figures measured after bundling to a model file's metadata (metrics, headline); the tensors are written
back exactly as stored (int8 stays int8, bit for bit), so the figures measured on the file still hold:

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
    from safetensors.torch import load_file, save

    from dlkit.core.atomic import atomic_write_bytes
    from dlkit.core.modelfile import _META_KEY, read_header, read_meta

    raw = load_file(args.path)  # the stored tensors, not dequantized
    meta = read_meta(args.path)
    assert json.loads(read_header(args.path)["__metadata__"][_META_KEY]) == meta
    metrics = {k: v for k, v in meta.get("metrics", {}).items() if k not in args.drop}
    meta["metrics"] = {**metrics, **json.loads(args.metrics)}
    if args.headline:
        meta["headline"] = args.headline
    before = {k: t.clone() for k, t in raw.items()}
    atomic_write_bytes(args.path, save(raw, metadata={_META_KEY: json.dumps(meta)}))
    after = load_file(args.path)
    assert before.keys() == after.keys() and all(before[k].dtype == after[k].dtype and before[k].equal(after[k])
                                                   for k in before)
    print(f"{args.path}: {meta['headline']}")


if __name__ == "__main__":
    main()
