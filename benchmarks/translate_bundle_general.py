"""Bundle a general translation model (Tatoeba + news + Multi30k mix): score it and its Multi30k counterpart on
the Tatoeba held-out split, newstest2013 and Multi30k test_2016_flickr (beam 5, `translate --eval`'s scoring),
then write dlkit/zoo/NAME.safetensors (fp16) with the figures in its metadata, and NAME.md (the card).

Usage (see docs/translate.md, "Training the general models"):
  python benchmarks/translate_bundle_general.py runs/en-fr/model.safetensors --name en-fr \
      --test .data/split/en-fr/test.tsv --dev DATA/parallel/newstest2013.en-fr.tsv.gz \
      --multi30k-test .data/m30k-test.en-fr.tsv --recipe "dlkit translate-train ..." --hardware "2-core CPU"
"""

from __future__ import annotations

import argparse
from pathlib import Path

ZOO = Path(__file__).resolve().parent.parent / "dlkit" / "zoo"
TARGETS = {"en-fr": {"tatoeba": 40, "newstest2013": 15}, "en-de": {"tatoeba": 30, "newstest2013": 10}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("--name", required=True, help="en-fr or en-de")
    ap.add_argument("--test", required=True, help="the Tatoeba held-out TSV (benchmarks/translate_split.py)")
    ap.add_argument("--dev", required=True, help="newstest2013 TSV")
    ap.add_argument("--multi30k-test", required=True, help="test_2016_flickr as a TSV (paste of .en and .xx)")
    ap.add_argument("--recipe", required=True, help="the exact training command(s)")
    ap.add_argument("--hardware", required=True)
    ap.add_argument("--beam", type=int, default=5)
    args = ap.parse_args()

    import torch

    from dlkit.core.modelfile import load_model_file, save_model
    from dlkit.core.report import Reporter
    from dlkit.core.runtime import make_runtime
    from dlkit.tasks.translate.infer import DecodeConfig
    from dlkit.tasks.translate.scoring import evaluate_models

    tensors, meta = load_model_file(args.model, "translate")
    pair = f"{meta['text']['src_lang']}-{meta['text']['tgt_lang']}"
    rt, report = make_runtime("cpu", "fp32", 0, distributed=False), Reporter()
    dc = DecodeConfig(beam=args.beam)
    rows, tables = {}, []
    for key, path in (("tatoeba", args.test), ("newstest2013", args.dev), ("multi30k", args.multi30k_test)):
        res = evaluate_models(path, [args.model, f"multi30k-{pair}"], dc, rt, report)
        rows[key] = {"general": res.rows[0], "multi30k": res.rows[1], "pairs": res.pairs,
                     "signature": res.bleu_signature, "chrf_signature": res.chrf_signature}
        tables.append(res.table())
        print(res.table(), flush=True)
    meta = {k: v for k, v in meta.items() if k not in ("format", "aliases")}
    meta["metrics"]["test"] = {k: {"bleu": r["general"].bleu, "chrf": r["general"].chrf, "pairs": r["pairs"],
                                   "signature": r["signature"], "beam": args.beam} for k, r in rows.items()}
    meta["training"]["command"], meta["training"]["hardware"] = args.recipe, args.hardware
    meta["headline"] = (f"sacreBLEU {rows['tatoeba']['general'].bleu:.1f} Tatoeba held-out, "
                        f"{rows['newstest2013']['general'].bleu:.1f} newstest2013")
    out = save_model(ZOO / f"{args.name}.safetensors", tensors, meta, dtype=torch.float16)
    t = meta["training"]
    lines = [f"| {k} ({r['pairs']:,} pairs) | **{r['general'].bleu:.2f}** | {r['general'].chrf:.2f} | "
             f"{r['multi30k'].bleu:.2f} | {TARGETS.get(pair, {}).get(k, 'within 3 of Multi30k')} |"
             for k, r in rows.items()]
    card = CARD.format(name=args.name, pair=pair, tgt=pair.split("-")[1], cfg=meta["config"],
                       params=t["params"] / 1e6, size=out.stat().st_size / 1e6, data=t["data"],
                       minutes=t["seconds"] / 60, steps=t["steps"], epochs=t["epochs"], hardware=args.hardware,
                       rows="\n".join(lines), sig=rows["tatoeba"]["signature"].replace("|", "\\|"),
                       chrf_sig=rows["tatoeba"]["chrf_signature"].replace("|", "\\|"), beam=args.beam,
                       recipe=args.recipe, val=meta["metrics"]["val_bleu"])
    ZOO.joinpath(f"{args.name}.md").write_text(card)
    print(meta["headline"], f"; {out} {out.stat().st_size / 1e6:.2f} MB")


CARD = """# {name}

English->{tgt} translation for everyday text, the default of `dlkit translate` (`--to {tgt}`), trained by
`dlkit translate-train` on Tatoeba sentence pairs, WMT news test sets of earlier years and Multi30k.

| | |
|---|---|
| task | translate ({pair}) |
| architecture | `transformer`: d_model {cfg[d_model]}, {cfg[enc_layers]} encoder + {cfg[dec_layers]} decoder layers, {cfg[heads]} heads, FF {cfg[ff]}, pre-LN, tied embeddings |
| parameters | {params:.2f} M |
| file | {size:.2f} MB (fp16 safetensors; sentencepiece model inside) |
| data | {data} (weights in the recipe); validation: English sentences held out of the mix (validation BLEU at selection {val:.2f}, greedy) |
| hardware | {hardware} |
| training | {minutes:.0f} min wall time, {steps} steps, {epochs} full epochs |

## Test results (sacreBLEU, detokenised, beam {beam}, length penalty 0.6)

| test set | BLEU | chrF | Multi30k model's BLEU | target |
|---|---|---|---|---|
{rows}

BLEU signature `{sig}`; chrF signature `{chrf_sig}`. The Tatoeba test set is held out by English sentence
(all translations of a held-out sentence, and no training pair with it); newstest2013 was not used for
training or selection; Multi30k test_2016_flickr is the Multi30k papers' test split.

## Recipe (exact commands)

```
{recipe}
```

## Data terms and attribution

- Tatoeba sentence pairs, CC-BY 2.0 FR: from tatoeba.org, via the Anki exports of manythings.org/anki.
- WMT news test sets: released by the WMT workshops for research.
- Multi30K (Elliott et al. 2016; French: Elliott et al. 2017), derived partly from Flickr30K: for
  non-commercial research and educational purposes.

The data are not included in dlkit.
"""


if __name__ == "__main__":
    main()
