"""tensorflow/nmt-style comparison: lstm, lstm-attention and transformer on the same data and time budget.

Each architecture is trained with `dlkit translate-train` for --minutes, then its best model translates
the test split with beam 5; prints a Markdown table (BLEU, parameters, training time, steps).

Usage:
  python benchmarks/translate_compare.py --data ../shared/data/multi30k --pair en-de --minutes 60 --out runs/compare
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ARCHS = ("lstm", "lstm-attention", "transformer")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="../shared/data/multi30k")
    ap.add_argument("--pair", default="en-de")
    ap.add_argument("--minutes", type=float, default=60)
    ap.add_argument("--preset", default="small")
    ap.add_argument("--vocab-size", type=int, default=5000)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--warmup", type=int, default=200, help="short budgets need a short warmup")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--out", default="runs/compare")
    ap.add_argument("--archs", default=",".join(ARCHS))
    args = ap.parse_args()

    from dlkit.core.modelfile import read_meta
    from dlkit.tasks.translate.data import multi30k_files, read_pairs
    from dlkit.tasks.translate.infer import DecodeConfig, load_translator, translate_lines
    from dlkit.text.bleu import translation_bleu as bleu

    src, ref = read_pairs(*multi30k_files(args.data, "test_2016_flickr", args.pair))
    rows = []
    for arch in args.archs.split(","):
        out = Path(args.out) / arch
        cmd = [sys.executable, "-m", "dlkit", "translate-train", "--data", args.data, "--pair", args.pair,
               "--arch", arch, "--preset", args.preset, "--vocab-size", str(args.vocab_size), "--lr", str(args.lr),
               "--warmup", str(args.warmup), "--epochs", "100",
               "--patience", "0", "--max-time", str(args.minutes), "--device", args.device, "--out", str(out), "-q"]
        subprocess.run(cmd, check=True)
        meta = read_meta(out / "model.safetensors", "translate")
        tr = load_translator(out / "model.safetensors")
        b = bleu(translate_lines(tr, src, DecodeConfig(beam=5)), ref, tr.pipe.tgt_lang)
        t = meta["training"]
        rows.append({"arch": arch, "sacrebleu": b.sacrebleu, "bleu_lc_tok": b.lc_tok, "params": t["params"],
                     "steps": t["steps"], "minutes": round(t["seconds"] / 60, 1), "signature": b.signature})
        print(json.dumps(rows[-1]), flush=True)
    print("\n| arch | test sacreBLEU | test BLEU (lc tok) | params | steps | train min |\n|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['arch']} | {r['sacrebleu']:.1f} | {r['bleu_lc_tok']:.1f} | {r['params'] / 1e6:.1f}M | "
              f"{r['steps']} | {r['minutes']} |")


if __name__ == "__main__":
    main()
