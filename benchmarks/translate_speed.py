"""Translation speed and quality on Multi30k test_2016_flickr (CPU by default).

Measures, for one model and beam size:
  * batched decoding (the CLI's path: length-sorted batches of --batch-size) -> sentences/s, target tokens/s,
    and the BLEU of those translations (sacreBLEU with signature, lower-cased tokenised BLEU);
  * one sentence at a time on the first --single N sentences -> sentences/s, and the speed-up of batching;
  * `echo "..." | dlkit translate` end to end (process start-up included), median of --e2e-runs runs.

With --startup N it measures only start-up: `echo 'A dog runs in the park.' | python -m dlkit translate` against
`python -c "import torch"`, N pairs in turn after one warm-up of each, and prints the median of the pair ratios
(whole-process wall time; take it on an idle machine, CONTRIBUTING.md).

Usage:
  python benchmarks/translate_speed.py --model multi30k-en-fr --data ../shared/data/multi30k --pair en-fr
  python benchmarks/translate_speed.py --startup 7
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time


def startup(model: str, pairs: int) -> dict:
    """Wall seconds of `echo SENTENCE | python -m dlkit translate -m MODEL` and of a bare `import torch`, in
    turn (A B A B ...) so that a drift of the machine's speed hits both; the median of the pairwise ratios."""
    import os
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]  # `python -m dlkit` of this checkout

    def wall(cmd: list[str], text: str | None) -> float:
        t0 = time.perf_counter()
        subprocess.run(cmd, input=text, text=True, capture_output=True, check=True, cwd=root)
        return time.perf_counter() - t0

    a_cmd = [sys.executable, "-m", "dlkit", "translate", "--model", model]
    b_cmd = [sys.executable, "-c", "import torch"]
    sentence = "A dog runs in the park.\n"
    wall(a_cmd, sentence), wall(b_cmd, None)  # warm-up: files in the page cache
    a, b = [], []
    for _ in range(pairs):
        a.append(wall(a_cmd, sentence))
        b.append(wall(b_cmd, None))
    ratios = [x / y for x, y in zip(a, b)]
    return {"translate_wall_s_median": round(statistics.median(a), 3), "import_torch_wall_s_median":
            round(statistics.median(b), 3), "ratio_median": round(statistics.median(ratios), 3),
            "ratio_min_max": [round(min(ratios), 3), round(max(ratios), 3)], "pairs": pairs,
            "load_1min_after": round(os.getloadavg()[0], 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="multi30k-en-fr")
    ap.add_argument("--data", default="../shared/data/multi30k")
    ap.add_argument("--pair", default="en-fr")
    ap.add_argument("--split", default="test_2016_flickr")
    ap.add_argument("--beam", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--single", type=int, default=100, help="sentences decoded one at a time")
    ap.add_argument("--e2e-runs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--precision", default="fp32", choices=["fp32", "bf16"],
                    help="bf16: the model runs under autocast (as `dlkit translate --precision bf16`)")
    ap.add_argument("--out", default=None, help="write the hypotheses here")
    ap.add_argument("--startup", type=int, default=0, metavar="N", help="only the start-up ratio, N pairs")
    args = ap.parse_args()
    if args.startup:
        print(json.dumps(startup(args.model, args.startup), indent=2))
        return

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from dlkit.core.zoo import resolve_model
    from dlkit.tasks.translate.data import multi30k_files, read_pairs
    from dlkit.tasks.translate.infer import DecodeConfig, load_translator, translate_stream
    from dlkit.text.bleu import translation_bleu as bleu

    from dlkit.core.runtime import make_runtime

    path = resolve_model(args.model, "translate")
    rt = make_runtime(args.device, args.precision, 0, distributed=False)  # bf16: the model runs under autocast
    tr = load_translator(path, rt)
    src, ref = read_pairs(*multi30k_files(args.data, args.split, args.pair))
    dc = DecodeConfig(beam=args.beam, batch_size=args.batch_size)

    t0 = time.perf_counter()
    hyps = [r["translation"] for r in translate_stream(tr, src, dc)]
    batched = time.perf_counter() - t0
    out_tokens = sum(len(tr.pipe.encode_tgt(h)) for h in hyps)
    b = bleu(hyps, ref, tr.pipe.tgt_lang)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            f.write("".join(h + "\n" for h in hyps))

    one = DecodeConfig(beam=args.beam, batch_size=1)
    sub = src[: args.single]
    t0 = time.perf_counter()
    for _ in translate_stream(tr, sub, one):
        pass
    single = time.perf_counter() - t0

    e2e = []
    for _ in range(args.e2e_runs):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "dlkit", "translate", "-m", str(path), "-q",
                        "--precision", args.precision, "--device", args.device],
                       input=src[0] + "\n", text=True, capture_output=True, check=True)
        e2e.append(time.perf_counter() - t0)

    res = {
        "model": str(path), "split": args.split, "sentences": len(src), "beam": args.beam,
        "batch_size": args.batch_size, "precision": args.precision, "device": args.device, "threads": torch.get_num_threads(),
        "batched_sentences_per_s": round(len(src) / batched, 1),
        "batched_target_tokens_per_s": round(out_tokens / batched, 1),
        "single_sentences_per_s": round(len(sub) / single, 2),
        "batching_speedup": round((len(src) / batched) / (len(sub) / single), 2),
        "e2e_echo_seconds_median": round(statistics.median(e2e), 2),
        "sacrebleu": b.sacrebleu, "signature": b.signature, "bleu_lc_tok": b.lc_tok,
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads",
    }
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
