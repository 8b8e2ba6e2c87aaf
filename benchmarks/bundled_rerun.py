"""Re-measure bundled models' quality figures the way their cards did, without writing anything.

    python benchmarks/bundled_rerun.py translate multi30k-en-fr --pair en-fr --data DATA/multi30k
    python benchmarks/bundled_rerun.py lm shakespeare-char --data DATA/tinyshakespeare/input.txt

``translate``: test_2016_flickr, beam 5 (the card's protocol, as ``benchmarks/translate_bundle.py`` scores it):
sacreBLEU and lower-cased tokenised BLEU. ``lm``: the exact loss over the whole validation split (the last 10%
of the characters, nanoGPT's split) in non-overlapping windows of the model's context, fp16 weights as stored,
fp32 inference. One JSON line on stdout each. For the super-resolution and classifier figures use
``superres_quality.py`` and ``classifier_eval.py`` (they write nothing either).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path


def translate(args) -> dict:
    from dlkit.tasks.translate.data import multi30k_files, read_pairs
    from dlkit.tasks.translate.infer import DecodeConfig, load_translator, translate_lines
    from dlkit.text.bleu import translation_bleu

    tr = load_translator(args.model)
    src, ref = read_pairs(*multi30k_files(args.data, "test_2016_flickr", args.pair))
    t0 = time.perf_counter()
    hyps = translate_lines(tr, src, DecodeConfig(beam=args.beam))
    b = translation_bleu(hyps, ref, tr.pipe.tgt_lang)
    return {"model": args.model, "split": "test_2016_flickr", "beam": args.beam, "sacrebleu": round(b.sacrebleu, 2),
            "bleu_lc_tok": round(b.lc_tok, 2), "signature": b.signature, "sentences": b.sentences,
            "seconds": round(time.perf_counter() - t0, 1)}


def lm(args) -> dict:
    from dlkit.tasks.lm.data import prepare_corpus
    from dlkit.tasks.lm.infer import load_lm
    from dlkit.tasks.lm.train import full_val_loss

    model, _, meta = load_lm(args.model)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as cache:
        corpus = prepare_corpus(Path(args.data), Path(cache), tokenizer_meta=meta["tokenizer"])
        loss = full_val_loss(model, corpus, model.cfg.block_size, "cpu")
        n = len(corpus.val)
    return {"model": args.model, "val_chars": n, "block": model.cfg.block_size, "val_loss": round(loss, 4),
            "seconds": round(time.perf_counter() - t0, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=("translate", "lm"))
    ap.add_argument("model")
    ap.add_argument("--data", required=True)
    ap.add_argument("--pair", help="translate: e.g. en-fr")
    ap.add_argument("--beam", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    print(json.dumps({**(translate(args) if args.what == "translate" else lm(args)),
                      "threads": torch.get_num_threads()}), flush=True)


if __name__ == "__main__":
    main()
