"""Bundle a general translation model (Tatoeba + news + Multi30k mix): score it and its Multi30k counterpart on
the Tatoeba held-out split, newstest2013 and Multi30k test_2016_flickr (beam 5, `translate --eval`'s scoring),
then write dlkit/zoo/NAME.safetensors with the figures in its metadata, and NAME.md (the card). With
``--save-dtype int8`` (the default: the zoo's 56 MB) the figures are those of the int8 file, and the Tatoeba row
of the trained (unquantised) file is printed beside it, so the change int8 makes is measured.

Usage (see docs/translate.md, "Training the general models"):
  python benchmarks/translate_bundle_general.py runs/en-fr/model.safetensors --name en-fr \
      --test .data/split/en-fr/test.tsv --dev DATA/parallel/newstest2013.en-fr.tsv.gz \
      --multi30k-test .data/m30k-test.en-fr.tsv --recipe "dlkit translate-train ..." --hardware "2-core CPU"

``--card-only`` rewrites the card (and the recipe/hardware in the bundled file's metadata) from the figures the
bundled file already holds, without translating anything again.

``python benchmarks/translate_bundle_general.py --tables`` rewrites the results tables of docs/translate.md and
benchmarks/RESULTS.md from the figures stored in the bundled en-fr and en-de files.
"""

from __future__ import annotations

import argparse
import re
import shlex
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
    ap.add_argument("--save-dtype", choices=("fp16", "int8"), default="int8")
    ap.add_argument("--card-only", action="store_true", help="rewrite the card from the bundled file's figures")
    args = ap.parse_args()
    recipe = args.recipe.rstrip() + "\n" + bundle_command(args)
    if args.card_only:
        return rewrite_card(args, recipe)

    from dlkit.core.modelfile import load_model_file, save_model
    from dlkit.core.report import Reporter
    from dlkit.core.runtime import make_runtime
    from dlkit.tasks.translate.infer import DecodeConfig
    from dlkit.tasks.translate.scoring import evaluate_models

    tensors, meta = load_model_file(args.model, "translate")
    pair = f"{meta['text']['src_lang']}-{meta['text']['tgt_lang']}"
    rt, report = make_runtime("cpu", "fp32", 0, distributed=False), Reporter()
    dc = DecodeConfig(beam=args.beam)
    stored = Path(args.model).with_suffix(f".{args.save_dtype}.safetensors")  # the file as it will be bundled
    save_model(stored, tensors, {k: v for k, v in meta.items() if k not in ("format", "aliases", "int8")},
               dtype=args.save_dtype)
    rows, trained = {}, None
    for key, path in (("tatoeba", args.test), ("newstest2013", args.dev), ("multi30k", args.multi30k_test)):
        extra = [args.model] if key == "tatoeba" else []
        res = evaluate_models(path, [str(stored), f"multi30k-{pair}", *extra], dc, rt, report)
        rows[key] = {"general": res.rows[0], "multi30k": res.rows[1], "pairs": res.pairs,
                     "signature": res.bleu_signature, "chrf_signature": res.chrf_signature}
        trained = res.rows[2] if extra else trained
        print(res.table(), flush=True)
    meta = {k: v for k, v in meta.items() if k not in ("format", "aliases")}
    meta["metrics"]["test"] = {k: {"bleu": r["general"].bleu, "chrf": r["general"].chrf, "pairs": r["pairs"],
                                   "signature": r["signature"], "chrf_signature": r["chrf_signature"],
                                   "beam": args.beam, "multi30k_model_bleu": r["multi30k"].bleu}
                               for k, r in rows.items()}
    meta["training"]["command"], meta["training"]["hardware"] = recipe, args.hardware
    meta["training"]["data"] = DATA_LABEL
    if meta["training"]["recipe"].get("init"):  # fine-tuned (--init): what the starting model was and scored
        meta["training"]["init"] = init_summary(meta["training"]["recipe"]["init"])
    meta["headline"] = (f"sacreBLEU {rows['tatoeba']['general'].bleu:.1f} Tatoeba held-out, "
                        f"{rows['newstest2013']['general'].bleu:.1f} newstest2013")
    meta["metrics"]["tatoeba_unquantised"] = {"bleu": trained.bleu, "chrf": trained.chrf}
    out = save_model(ZOO / f"{args.name}.safetensors", tensors, meta, dtype=args.save_dtype)
    ZOO.joinpath(f"{args.name}.md").write_text(make_card(args.name, meta, out, args.save_dtype))
    print(meta["headline"], f"; {out} {out.stat().st_size / 1e6:.2f} MB")


DATA_LABEL = "Tatoeba, news, Multi30k"  # what `dlkit models` shows; the card lists the files


def bundle_command(args) -> str:
    """This script's own command line, the shared data folder written DATA (as in the training command)."""
    parts = ["python", "benchmarks/translate_bundle_general.py", args.model, "--name", args.name, "--test", args.test,
             "--dev", args.dev, "--multi30k-test", args.multi30k_test, "--beam", str(args.beam),
             "--save-dtype", args.save_dtype]
    line = " ".join(re.sub(r"^.*/data/(parallel|multi30k)/", r"DATA/\1/", shlex.quote(p)) for p in parts)
    lang = args.name.split("-")[-1]
    paste = (f"paste <(zcat DATA/multi30k/test_2016_flickr.en.gz) <(zcat DATA/multi30k/test_2016_flickr.{lang}.gz)"
             f" > {args.multi30k_test}")
    return paste + "\n" + line


def init_summary(spec: str) -> dict:
    """Training time and test figures of the model a fine-tuning run started from."""
    from dlkit.core.modelfile import load_model_file

    _, im = load_model_file(spec, "translate")
    t = im["training"]
    return {"file": Path(spec).name, "seconds": t["seconds"], "steps": t["steps"], "epochs": t["epochs"],
            "test": {k: round(r["bleu"], 2) for k, r in im["metrics"].get("test", {}).items()},
            "init": t.get("init")}


def training_line(t: dict) -> str:
    epochs = f"{t['epochs']} full epoch{'s' * (t['epochs'] != 1)}" if t["epochs"] else "less than one epoch of the mix"
    line = f"{t['seconds'] / 60:.0f} min wall time, {t['steps']} steps, {epochs}"
    chain, i = [], t.get("init")
    while i:  # oldest first
        chain.insert(0, f"{i['seconds'] / 60:.0f} min, {i['steps']} steps ({i['file']})")
        i = i.get("init")
    return line if not chain else "; then ".join(chain + [f"fine-tuned from it (--init): {line}"])


def history(t: dict) -> str:
    rows, i = [], t.get("init")
    while i:
        if i["test"]:
            rows.append(f"- {i['file']} (the starting model): " + ", ".join(f"{k} {v:.2f}" for k, v in i["test"].items())
                        + " BLEU, scored the same way.")
        i = i.get("init")
    return ("\n## History\n\n" + "\n".join(rows) + "\n") if rows else ""


def make_card(name: str, meta: dict, out: Path, save_dtype: str) -> str:
    t, m = meta["training"], meta["metrics"]
    pair = f"{meta['text']['src_lang']}-{meta['text']['tgt_lang']}"
    test = m["test"]
    lines = [f"| {k} ({r['pairs']:,} pairs) | **{r['bleu']:.2f}** | {r['chrf']:.2f} | "
             f"{r['multi30k_model_bleu']:.2f} | {TARGETS.get(pair, {}).get(k, 'within 3 of Multi30k')} |"
             for k, r in test.items()]
    files = " + ".join(Path(d.split(":")[0]).name for d in t["recipe"]["data"])
    return CARD.format(name=name, pair=pair, tgt=pair.split("-")[1], cfg=meta["config"],
                       params=t["params"] / 1e6, size=out.stat().st_size / 1e6, data=files,
                       training=training_line(t), history=history(t), hardware=t["hardware"],
                       rows="\n".join(lines), sig=test["tatoeba"]["signature"].replace("|", "\\|"),
                       chrf_sig=test["tatoeba"]["chrf_signature"].replace("|", "\\|"), beam=test["tatoeba"]["beam"],
                       recipe=t["command"], val=m["val_bleu"], dtype=STORAGE[save_dtype],
                       trained=m["tatoeba_unquantised"]["bleu"], trained_dtype=t["recipe"]["save_dtype"],
                       dtype_short=save_dtype, stored=test["tatoeba"]["bleu"])


def rewrite_card(args, recipe: str) -> None:
    """New recipe/hardware/data label in the bundled file's metadata (tensors untouched) and a new card."""
    from dlkit.core.modelfile import read_meta, replace_meta

    out = ZOO / f"{args.name}.safetensors"
    meta = read_meta(out)
    meta["training"]["command"], meta["training"]["hardware"] = recipe, args.hardware
    meta["training"]["data"] = DATA_LABEL
    replace_meta(out, meta)
    ZOO.joinpath(f"{args.name}.md").write_text(make_card(args.name, meta, out, args.save_dtype))
    print(f"{out}: card and metadata rewritten")


STORAGE = {"fp16": "fp16 safetensors", "int8": "safetensors: weight matrices int8 with an fp16 scale per row, the rest fp16"}

CARD = """# {name}

English->{tgt} translation for everyday text, the default of `dlkit translate` (`--to {tgt}`), trained by
`dlkit translate-train` on Tatoeba sentence pairs, WMT news test sets of earlier years and Multi30k.

| | |
|---|---|
| task | translate ({pair}) |
| architecture | `transformer`: d_model {cfg[d_model]}, {cfg[enc_layers]} encoder + {cfg[dec_layers]} decoder layers, {cfg[heads]} heads, FF {cfg[ff]}, pre-LN, tied embeddings |
| parameters | {params:.2f} M |
| file | {size:.2f} MB ({dtype}; sentencepiece model inside) |
| data | {data} (weights in the recipe); validation: English sentences held out of the mix (validation BLEU at selection {val:.2f}, greedy) |
| hardware | {hardware} |
| training | {training} |

## Test results (sacreBLEU, detokenised, beam {beam}, length penalty 0.6)

| test set | BLEU | chrF | Multi30k model's BLEU | target |
|---|---|---|---|---|
{rows}

The figures are those of the bundled file; the trained file ({trained_dtype}, before {dtype_short}) scored {trained:.2f} on the Tatoeba test
(bundled: {stored:.2f}). BLEU signature `{sig}`; chrF signature `{chrf_sig}`. The Tatoeba test set is held out by English sentence
(all translations of a held-out sentence, and no training pair with it); newstest2013 was not used for
training or selection; Multi30k test_2016_flickr is the Multi30k papers' test split.
{history}
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


ROWS = (("tatoeba", "Tatoeba held-out (by English sentence)", ">= {}"), ("newstest2013", "newstest2013", ">= {}"),
        ("multi30k", "Multi30k test_2016_flickr", "within 3"))


def tables() -> None:
    """The two results tables, from the bundled files' stored figures (nothing is translated)."""
    from dlkit.core.modelfile import load_model_file

    tests = {}
    for pair in TARGETS:
        f = ZOO / f"{pair}.safetensors"
        tests[pair] = load_model_file(f, "translate")[1]["metrics"]["test"] if f.exists() else {}
    head = "| test set | " + " | ".join(f"{p} | multi30k-{p} | target" for p in TARGETS) + " |"
    rule = "|---" * (1 + 3 * len(TARGETS)) + "|"
    short, full = [head, rule], [head, rule]
    for key, label, target in ROWS:
        a, b = [], []
        for pair, t in tests.items():
            r, goal = t.get(key), target.format(TARGETS[pair].get(key))
            if r is None:
                a += ["", "", goal]
                b += ["", "", goal]
                continue
            a += [f"**{r['bleu']:.2f}**", f"{r['multi30k_model_bleu']:.2f}", goal]
            b += [f"**{r['bleu']:.2f}** (chrF {r['chrf']:.2f})", f"{r['multi30k_model_bleu']:.2f}", goal]
        pairs = " / ".join(f"{t[key]['pairs']:,}" for t in tests.values() if key in t)
        short.append(f"| {label} | " + " | ".join(a) + " |")
        full.append(f"| {label} ({pairs} pairs) | " + " | ".join(b) + " |")
    root = ZOO.parent.parent
    for page, tag, rows in ((root / "docs" / "translate.md", "general-table", short),
                            (root / "benchmarks" / "RESULTS.md", "general-results", full)):
        text = page.read_text()
        start, end = f"<!-- {tag}:start -->\n", f"<!-- {tag}:end -->"
        i, j = text.index(start) + len(start), text.index(end)
        page.write_text(text[:i] + "\n".join(rows) + "\n" + text[j:])
        print(f"{page.relative_to(root)}: {tag} rewritten")


if __name__ == "__main__":
    import sys

    tables() if sys.argv[1:] == ["--tables"] else main()
