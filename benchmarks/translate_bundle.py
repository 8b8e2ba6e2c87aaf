"""Turn a trained translate model into a bundled one: score it on Multi30k test_2016_flickr (beam 5),
record the test BLEU in its metadata and headline, write dlkit/zoo/NAME.safetensors (fp16, or int8 with
``--save-dtype int8``: then the file scored is the int8 one) and NAME.md. Re-storing a bundled model: give the
zoo file itself; --recipe/--hardware default to those in its metadata and the card's History is kept.

Usage:
  python benchmarks/translate_bundle.py runs/en-fr/model.safetensors --name multi30k-en-fr --pair en-fr \
      --data ../shared/data/multi30k --recipe "dlkit translate-train ..." --hardware "2-core CPU (shared)"
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

ZOO = Path(__file__).resolve().parent.parent / "dlkit" / "zoo"
# the project's targets and goals (lower-cased tokenised BLEU on test_2016_flickr)
TARGETS = {"en-de": (36.0, 41.0), "en-fr": (55.0, 62.0)}


def verdict(pair: str, lc: float, minutes: float) -> str:
    if pair not in TARGETS:
        return ""
    target, goal = TARGETS[pair]
    if lc >= goal:
        return f"This meets the project's goal for {pair} (lc tok BLEU >= {goal:g})."
    if lc >= target:
        return (f"This meets the project's target for {pair} (lc tok BLEU >= {target:g}) but not its goal ({goal:g}): "
                f"about {minutes:.0f} minutes of a 2-core CPU. More time (or a GPU and `--preset base`) is the way on.")
    return (f"The project's target for {pair} (lc tok BLEU >= {target:g}) is **not** reached: this model had only "
            f"about {minutes:.0f} minutes of a shared 2-core CPU. The same recipe with more time (or a GPU, and "
            f"`--preset base`) is the way to better figures.")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("--name", required=True)
    ap.add_argument("--pair", required=True)
    ap.add_argument("--data", default="../shared/data/multi30k")
    ap.add_argument("--recipe", help="the exact training command (default: the model's own)")
    ap.add_argument("--hardware", help="(default: the model's own)")
    ap.add_argument("--beam", type=int, default=5)
    ap.add_argument("--save-dtype", choices=("fp16", "int8"), default="fp16")
    args = ap.parse_args()

    from dlkit.core.modelfile import load_model_file, save_model
    from dlkit.tasks.translate.data import multi30k_files, read_pairs
    from dlkit.tasks.translate.infer import DecodeConfig, load_translator, translate_lines
    from dlkit.text.bleu import translation_bleu as bleu

    tensors, meta = load_model_file(args.model, "translate")
    args.recipe = args.recipe or meta["training"]["command"]
    args.hardware = args.hardware or meta["training"]["hardware"]
    meta = {k: v for k, v in meta.items() if k not in ("format", "aliases", "int8")}
    stored = Path("runs") / f"{args.name}.{args.save_dtype}.safetensors"  # the file as it will be bundled
    stored.parent.mkdir(exist_ok=True)
    save_model(stored, tensors, meta, dtype=args.save_dtype)
    tr = load_translator(str(stored))
    src, ref = read_pairs(*multi30k_files(args.data, "test_2016_flickr", args.pair))
    t0 = time.perf_counter()
    hyps = translate_lines(tr, src, DecodeConfig(beam=args.beam))
    seconds = time.perf_counter() - t0
    b = bleu(hyps, ref, tr.pipe.tgt_lang)
    test = {"split": "test_2016_flickr", "beam": args.beam, "sacrebleu": b.sacrebleu, "signature": b.signature,
            "bleu_lc_tok": b.lc_tok, "sentences": b.sentences}
    meta["metrics"]["test_2016_flickr"] = test
    meta["training"]["data"] = f"multi30k train {args.pair}"
    meta["training"]["command"] = args.recipe
    meta["training"]["hardware"] = args.hardware
    meta["headline"] = f"BLEU {b.lc_tok:.1f} (test_2016_flickr, lc tok); sacreBLEU {b.sacrebleu:.1f}"
    old_card = ZOO.joinpath(f"{args.name}.md")
    history = old_card.read_text().partition("\n## History\n")[2] if old_card.exists() else ""
    out = save_model(ZOO / f"{args.name}.safetensors", tensors, meta, dtype=args.save_dtype)
    params = sum(t.numel() for k, t in tensors.items() if k not in meta.get("aliases", {}))
    params = meta["training"].get("params", params)
    card = CARD.format(
        name=args.name, pair=args.pair, src=args.pair.split("-")[0], tgt=args.pair.split("-")[1], arch=meta["arch"],
        cfg=meta["config"], params=params / 1e6, size=out.stat().st_size / 1e6, recipe=args.recipe,
        hardware=args.hardware, minutes=meta["training"]["seconds"] / 60, steps=meta["training"]["steps"],
        epochs=meta["training"]["epochs"],
        val=meta["metrics"]["val_bleu"], val_lc=meta["metrics"]["val_bleu_lc_tok"], sb=b.sacrebleu, sig=b.signature.replace("|", "\\|"),
        lc=b.lc_tok, beam=args.beam, dec_s=seconds, example=hyps[0], example_src=src[0], example_ref=ref[0],
        vocab=meta["config"]["src_vocab"], dtype=STORAGE[args.save_dtype], verdict=verdict(args.pair, b.lc_tok, meta["training"]["seconds"] / 60),
        selected=(f"the average of the last {meta['training']['averaged_checkpoints']} validated checkpoints"
                  if meta["training"].get("averaged_checkpoints") else "the best validated checkpoint (an average of "
                  "the last ones, when tried, was not better)"),
    )
    ZOO.joinpath(f"{args.name}.md").write_text(card + (f"\n## History\n{history}" if history else ""))
    print(meta["headline"], f"({b.signature}); {out} {out.stat().st_size / 1e6:.2f} MB")


STORAGE = {"fp16": "fp16 safetensors", "int8": "safetensors: weight matrices int8 with an fp16 scale per row, the rest fp16"}

CARD = """# {name}

English->{tgt} translation model ({pair}) trained by `dlkit translate-train`; use it with
`dlkit translate --model {name}`.

| | |
|---|---|
| task | translate ({src} -> {tgt}) |
| architecture | `{arch}`: d_model {cfg[d_model]}, {cfg[enc_layers]} encoder + {cfg[dec_layers]} decoder layers, {cfg[heads]} heads, FF {cfg[ff]}, pre-LN, tied embeddings |
| parameters | {params:.2f} M |
| file | {size:.2f} MB ({dtype}; sentencepiece model inside) |
| subwords | sentencepiece BPE, joint vocabulary of {vocab}, after Moses normalisation + tokenisation |
| data | Multi30k task 1: train (29,000 pairs) for training, val (1,014) for model selection; test_2016_flickr (1,000) for the figures below |
| hardware | {hardware} |
| training | {minutes:.0f} min wall time, {steps} steps, {epochs} full epochs; bundled: {selected} |

## Test results (test_2016_flickr, beam {beam}, length penalty 0.6)

| metric | value |
|---|---|
| sacreBLEU (detokenised) | **{sb:.2f}** |
| sacreBLEU signature | `{sig}` |
| BLEU, lower-cased Moses-tokenised (Multi30k literature's convention) | **{lc:.2f}** |
| validation BLEU at selection (greedy, sacreBLEU / lc tok) | {val:.2f} / {val_lc:.2f} |

{verdict}

Example (first test sentence):

- source: {example_src}
- dlkit: {example}
- reference: {example_ref}

## Recipe (exact command)

```
{recipe}
```

Then `python benchmarks/translate_bundle.py OUT/model.safetensors --name {name} --pair {pair} ...` scored it
on the test split and wrote this file and the model ({dtype}).

## Data terms

Multi30K (Elliott et al. 2016; French: Elliott et al. 2017), derived partly from Flickr30K: for
non-commercial research and educational purposes. The data are not included in dlkit.
"""


if __name__ == "__main__":
    main()
