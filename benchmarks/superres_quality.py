"""Super-resolution quality: bicubic vs models on benchmark folders (the literature's protocol), optionally bundling.

    python benchmarks/superres_quality.py --sets ../shared/data/sr/benchmarks/Set5 ../shared/data/sr/benchmarks/Set14 \
        --model runs/srresnet/model.safetensors [--bundle srresnet-x4]

Protocol: HR mod-cropped to the scale, LR by MATLAB-compatible bicubic (uint8), PSNR/SSIM on Y (BT.601) with
``scale`` px shaved, outputs rounded to uint8. ``--bundle NAME`` writes the model in fp16 to dlkit/zoo/NAME.safetensors
with these figures (measured on the fp16 weights) in its metadata and headline.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from dlkit.core.modelfile import load_model_file, save_model
from dlkit.core.zoo import ZOO_DIR, resolve_model
from dlkit.tasks.superres import infer


def measure(models: dict, sets: list[Path], scale: int) -> dict:
    out = {}
    for d in sets:
        images, _ = infer.benchmark_images(d)
        t0 = time.perf_counter()
        res, _ = infer.evaluate(images, scale, models)
        out[d.name] = {"images": res.images, "seconds": round(time.perf_counter() - t0, 1),
                       "results": {k: {"psnr": round(v["psnr"], 3), "ssim": round(v["ssim"], 4)} for k, v in res.rows.items()}}
    return out


def markdown(table: dict, scale: int) -> str:
    sets = list(table)
    methods = list(next(iter(table.values()))["results"])
    head = "| method | " + " | ".join(f"{s} PSNR / SSIM" for s in sets) + " |"
    lines = [head, "|---" * (len(sets) + 1) + "|"]
    for m in methods:
        cells = [f"{table[s]['results'][m]['psnr']:.2f} / {table[s]['results'][m]['ssim']:.4f}" for s in sets]
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + f"\n\n(x{scale}, Y channel BT.601, {scale} px shaved, MATLAB-bicubic LR, uint8 outputs)"


def bundle(src: str, name: str, sets: list[Path]) -> dict:
    """fp16 copy into the zoo, then measure the bundled file itself and write the figures into its metadata."""
    state, meta = load_model_file(resolve_model(src, "superres"), "superres")
    dst = ZOO_DIR / f"{name}.safetensors"
    meta = {k: v for k, v in meta.items() if k not in ("format", "aliases")}
    save_model(dst, state, meta, dtype=torch.float16)
    model, _ = infer.load_model(str(dst))
    scale = int(meta["scale"])
    table = measure({name: model}, sets, scale)
    meta["metrics"] = {**meta.get("metrics", {}), "benchmarks": table,
                       "protocol": "Y BT.601, shave=scale, HR mod-cropped, MATLAB bicubic LR, uint8 output"}
    parts = [f"{s} {t['results'][name]['psnr']:.2f} dB" for s, t in table.items()]
    meta["headline"] = " / ".join(parts) + f" (Y, x{scale})"
    save_model(dst, state, meta, dtype=torch.float16)
    return {"path": str(dst), "headline": meta["headline"], "benchmarks": table}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sets", nargs="+", type=Path, required=True, help="benchmark folders of HR images")
    ap.add_argument("--model", action="append", default=[], help="model NAME or path (repeatable)")
    ap.add_argument("--scale", type=int, default=4)
    ap.add_argument("--bundle", help="write the (single) --model into dlkit/zoo/BUNDLE.safetensors in fp16")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.bundle:
        if len(args.model) != 1:
            ap.error("--bundle takes exactly one --model")
        print(json.dumps(bundle(args.model[0], args.bundle, args.sets), indent=1))
        return
    models = {}
    for spec in args.model:
        m, meta = infer.load_model(spec)
        models[meta["name"]] = m
    table = measure(models, args.sets, args.scale)
    print(json.dumps({"machine": f"{platform.processor() or platform.machine()}, torch {torch.__version__}",
                      "threads": args.threads, "table": table}, indent=1))
    print(markdown(table, args.scale))


if __name__ == "__main__":
    main()
