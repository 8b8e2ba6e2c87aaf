"""Hold out a test set BY ENGLISH SENTENCE from a parallel TSV, and keep it out of every training file.

The first TSV is split: N English sentences (all their translations) go to OUT/test.tsv, chosen by a keyed hash
of (seed, sentence), so the split is deterministic and does not depend on line order. Every TSV given (the first
included) is then written to OUT/train/<name> without the pairs whose English sentence is held out, so no test
sentence is seen in training, whichever mix of the files a recipe uses. Bad lines are skipped with a warning.

Usage:
  python benchmarks/translate_split.py ../shared/data/parallel/tatoeba.en-fr.tsv.gz \\
      ../shared/data/parallel/news.en-fr.tsv.gz --held-out 2500 --seed 1 --out .data/split/en-fr
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from dlkit.tasks.translate.corpus import held_out_keys, read_tsv, sentence_key, write_tsv


def split_files(files: list[str], held_out: int, seed: int, out: Path, warn=None) -> dict:
    """Write OUT/test.tsv (from the first file) and OUT/train/<name> for every file; return the counts."""
    en, other = read_tsv(files[0], warn=warn)
    keys = held_out_keys(en, held_out, seed)
    test = [i for i, s in enumerate(en) if sentence_key(s) in keys]
    write_tsv(out / "test.tsv", [en[i] for i in test], [other[i] for i in test])
    counts = {"test": {"sentences": len(keys), "pairs": len(test)}}
    for f in files:
        a, b = (en, other) if f == files[0] else read_tsv(f, warn=warn)
        keep = [i for i, s in enumerate(a) if sentence_key(s) not in keys]
        name = Path(f).name
        write_tsv(out / "train" / (name if name.endswith(".gz") else name + ".gz"),
                  [a[i] for i in keep], [b[i] for i in keep])
        counts[name] = {"pairs": len(a), "train": len(keep), "removed": len(a) - len(keep)}
    return counts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("files", nargs="+", help="TSV files 'english<TAB>other'; the first is the one split")
    ap.add_argument("--held-out", type=int, default=2500, help="English sentences held out for the test set")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", type=Path, default=Path(".data/split"))
    args = ap.parse_args()
    counts = split_files(args.files, args.held_out, args.seed, args.out,
                         warn=lambda m: print("warning:", m, file=sys.stderr))
    for name, c in counts.items():
        print(name, c, file=sys.stderr)
    print(args.out / "test.tsv")


if __name__ == "__main__":
    main()
