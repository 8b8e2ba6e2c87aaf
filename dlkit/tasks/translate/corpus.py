"""Parallel corpora for ``translate-train``: TSV files and Multi30k-style folders mixed with weights, and a
held-out split made by English sentence.

* A source is ``PATH`` or ``PATH:WEIGHT``: a TSV file (plain or gzip) of ``english<TAB>other`` pairs, or a
  Multi30k-style folder (``train``/``val`` files per language, see :func:`dlkit.tasks.translate.data.multi30k_files`).
  WEIGHT scales how often the source's pairs are seen per epoch: 2 = every pair twice, 0.5 = a fixed half.
* TSV lines: exactly one tab. A line with no tab, more than one tab (a tab inside a field cannot be told from a
  third column), an empty side, or more than ``MAX_TSV_LINE`` characters is skipped with a warning naming the file
  and line; a blank line is skipped silently. Whole files go through :func:`dlkit.core.io.read_text` (capped: a
  gzip bomb stops at the cap).
* Direction: TSV files hold English first. With ``--pair xx-en`` the columns are swapped; with no English in the
  pair they are read as ``SRC<TAB>TGT``.
* The held-out split groups pairs by their English sentence (whitespace-folded, case-folded), so all translations
  of one sentence land on the same side (Tatoeba has many per sentence: a split by line leaks). Which sentences
  are held out is a function of (seed, sentence) alone: a keyed hash ranks them.
"""

from __future__ import annotations

import hashlib
import math
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from dlkit.core.errors import DataError, UsageError
from dlkit.core.io import quote, read_text

MAX_TSV_LINE = 10_000  # characters; a longer line is skipped (cutting one side would misalign the pair)
WARN_LINES = 5  # bad lines of one file named one by one; the rest counted in one more warning
VALID_SENTENCES = 2000  # English sentences held out for validation when no validation files are given
VALID_FRACTION = 0.05  # ... but at most this fraction of the distinct English sentences

Warn = Callable[[str], None]


@dataclass(frozen=True)
class Source:
    path: str
    weight: float = 1.0

    @property
    def is_folder(self) -> bool:
        return Path(self.path).is_dir()


def parse_source(spec: str) -> Source:
    """``PATH`` or ``PATH:WEIGHT`` (WEIGHT a positive number, e.g. ``news.en-fr.tsv.gz:2``)."""
    if Path(spec).exists() or ":" not in spec:
        return Source(spec)
    head, _, tail = spec.rpartition(":")
    try:
        weight = float(tail)
    except ValueError:
        return Source(spec)  # a path with a colon; its reader says if it does not exist
    if not (math.isfinite(weight) and weight > 0):
        raise UsageError(f"--data {quote(spec)}: the weight after ':' must be a positive number")
    return Source(head, weight)


class _BadLines:
    """Warnings for skipped lines: the first ``WARN_LINES`` by number, then one count."""

    def __init__(self, path, warn: Warn | None):
        self.path, self.warn, self.count = path, warn, 0

    def __call__(self, lineno: int, why: str) -> None:
        self.count += 1
        if self.warn and self.count <= WARN_LINES:
            self.warn(f"'{quote(self.path)}' line {lineno:,}: {why}; skipped")

    def close(self) -> None:
        if self.warn and self.count > WARN_LINES:
            self.warn(f"'{quote(self.path)}': {self.count - WARN_LINES:,} more bad lines skipped "
                      f"({self.count:,} in all)")


def read_tsv(path, reverse: bool = False, warn: Warn | None = None,
             max_chars: int = MAX_TSV_LINE) -> tuple[list[str], list[str]]:
    """(first column, second column) of a TSV of pairs, or swapped with ``reverse``; bad lines skipped."""
    text = read_text(path, "data file", errors="replace")
    bad = _BadLines(path, warn)
    a, b = [], []
    for i, line in enumerate(text.split("\n"), 1):  # not splitlines(): U+2028 and \x1c are not line ends here
        line = line.rstrip("\r")
        if not line.strip():
            continue
        if len(line) > max_chars:
            bad(i, f"{len(line):,} characters (at most {max_chars:,})")
            continue
        parts = line.split("\t")
        if len(parts) != 2:
            bad(i, "no tab" if len(parts) == 1 else
                f"{len(parts) - 1} tabs (exactly one expected; a tab inside a sentence cannot be told from a column)")
            continue
        x, y = parts[0].strip(), parts[1].strip()
        if not x or not y:
            bad(i, "an empty side")
            continue
        a.append(x)
        b.append(y)
    bad.close()
    if not a:
        raise DataError(f"data file '{quote(path)}' holds no usable 'english<TAB>other' pairs")
    return (b, a) if reverse else (a, b)


# ------------------------------------------------------------------ mixing
def weighted_indices(n: int, weight: float, seed: int, salt: str = "") -> list[int]:
    """Indices of ``n`` pairs repeated ``weight`` times: ``int(weight)`` full copies plus a fixed random sample
    of ``round(frac * n)`` more (a function of ``seed`` and ``salt``)."""
    whole, frac = int(weight), weight - int(weight)
    idx = list(range(n)) * whole
    k = round(frac * n)
    if k:
        idx += sorted(random.Random(f"{seed}:{salt}").sample(range(n), k))
    return idx


# ------------------------------------------------------------------ the split by English sentence
def sentence_key(text: str) -> str:
    """What makes two English sentences 'the same' for the split: whitespace and case folded."""
    return " ".join(text.split()).casefold()


def _rank(key: str, seed: int) -> bytes:
    return hashlib.blake2b(f"{seed}\x00{key}".encode("utf-8", "replace"), digest_size=8).digest()


def held_out_keys(english: Sequence[str], n: int, seed: int) -> set[str]:
    """The ``n`` English sentences (keys) held out: the first by a keyed hash, independent of order."""
    keys = {sentence_key(s) for s in english}
    return set(sorted(keys, key=lambda k: _rank(k, seed))[:n])


def held_out_size(n_sentences: int, wanted: int = VALID_SENTENCES, max_fraction: float = VALID_FRACTION) -> int:
    """``wanted`` sentences, or ``max_fraction`` of them when the data is small (at least 1)."""
    if n_sentences < 2:
        raise DataError(f"only {n_sentences} distinct English sentence(s): too few to hold out validation data")
    return max(1, min(wanted, int(n_sentences * max_fraction), n_sentences - 1))


def split_by_sentence(english: Sequence[str], n: int, seed: int) -> tuple[list[int], list[int]]:
    """(train, held-out) line indices; every line of a held-out English sentence is held out."""
    out = held_out_keys(english, n, seed)
    train, held = [], []
    for i, s in enumerate(english):
        (held if sentence_key(s) in out else train).append(i)
    return train, held


# ------------------------------------------------------------------ a whole mix
@dataclass
class Mix:
    """Training pairs (weighted), validation pairs, and what each source gave (for the log and the model card)."""

    src: list[str] = field(default_factory=list)
    tgt: list[str] = field(default_factory=list)
    valid_src: list[str] = field(default_factory=list)
    valid_tgt: list[str] = field(default_factory=list)
    sources: list[dict] = field(default_factory=list)  # {"name", "weight", "pairs", "train"}


def mix(parts: list[tuple[Source, list[str], list[str]]], english_side: int, seed: int,
        valid: tuple[list[str], list[str]] | None = None, valid_sentences: int = VALID_SENTENCES,
        valid_fraction: float = VALID_FRACTION) -> Mix:
    """Hold out validation pairs by English sentence across all ``parts`` (unless ``valid`` pairs are given: then
    training pairs whose English sentence is among them are dropped), then weight each part's training pairs.

    ``english_side``: 0 when the English sentence is the source of the pairs, 1 when it is the target."""
    english = [p[1 + english_side] for p in parts]
    out = Mix()
    if valid is not None:
        out.valid_src, out.valid_tgt = valid
        drop = {sentence_key(s) for s in (valid[english_side])}
    else:
        every = [s for e in english for s in e]
        n = held_out_size(len({sentence_key(s) for s in every}), valid_sentences, valid_fraction)
        drop = held_out_keys(every, n, seed)
    for k, ((source, src, tgt), eng) in enumerate(zip(parts, english)):
        keep = [i for i, s in enumerate(eng) if sentence_key(s) not in drop]
        if valid is None:
            held = [i for i, s in enumerate(eng) if sentence_key(s) in drop]
            out.valid_src += [src[i] for i in held]
            out.valid_tgt += [tgt[i] for i in held]
        chosen = [keep[j] for j in weighted_indices(len(keep), source.weight, seed, salt=str(k))]
        out.src += [src[i] for i in chosen]
        out.tgt += [tgt[i] for i in chosen]
        out.sources.append({"name": Path(source.path).name, "weight": source.weight, "pairs": len(src),
                            "train": len(chosen)})
    if not out.src:
        raise DataError("no training pairs left after holding out the validation sentences")
    if valid is None:  # in hash order, so that a cap (--valid-max) takes a sample of the whole mix
        pairs = sorted(zip(out.valid_src, out.valid_tgt), key=lambda p: _rank(sentence_key(p[english_side]), seed))
        out.valid_src, out.valid_tgt = [p[0] for p in pairs], [p[1] for p in pairs]
    return out


def write_tsv(path, src: Sequence[str], tgt: Sequence[str], reverse: bool = False) -> Path:
    """Pairs as ``SRC<TAB>TGT`` lines (``reverse``: ``TGT<TAB>SRC``, English first again); ``.gz`` compresses."""
    import gzip

    from dlkit.core.atomic import atomic_write_bytes

    text = "".join(f"{b}\t{a}\n" if reverse else f"{a}\t{b}\n" for a, b in zip(src, tgt)).encode("utf-8")
    p = Path(path)
    atomic_write_bytes(p, gzip.compress(text, mtime=0) if p.suffix == ".gz" else text)
    return p


# ------------------------------------------------------------------ what translate-train reads
def languages(pair: str | None, src_file: str | None = None, tgt_file: str | None = None) -> tuple[str, str]:
    """The pair's languages, or guessed from ``train.fr.gz``-style names (else neutral codes: Moses then uses
    language-independent rules)."""
    from dlkit.tasks.translate.data import split_pair

    if pair:
        return split_pair(pair)
    return _guess_lang(src_file, "xx"), _guess_lang(tgt_file, "yy")


def _guess_lang(path: str | None, default: str) -> str:
    if path:
        parts = Path(path).name.removesuffix(".gz").split(".")
        if len(parts) > 1 and 2 <= len(parts[-1]) <= 3 and parts[-1].isalpha():
            return parts[-1].lower()
    return default


def load_text(cfg, warn: Warn | None = None) -> tuple[Mix, str, str]:
    """The training mix and validation pairs a ``TrainConfig`` names, and its languages."""
    from dlkit.tasks.translate.data import multi30k_files, read_pairs

    sl, tl = languages(cfg.pair, cfg.src, cfg.tgt)
    reverse, english_side = tl == "en" and sl != "en", int(tl == "en" and sl != "en")
    sources = [parse_source(s) for s in cfg.data] + ([Source(cfg.tsv)] if cfg.tsv else [])
    if not sources and not (cfg.src and cfg.tgt):
        raise UsageError("give training data: --data FILE.tsv[.gz] or FOLDER (repeatable), or --src FILE --tgt FILE")
    parts, folder_val = [], ([], [])
    for s in sources:
        if s.is_folder:
            if not cfg.pair:
                raise UsageError(f"--data {quote(s.path)} is a folder: give --pair SRC-TGT (e.g. --pair en-fr)")
            parts.append((s, *read_pairs(*multi30k_files(s.path, "train", cfg.pair))))
            if all(x.is_folder for x in sources) and not cfg.src:  # only folders: their val files validate
                v = read_pairs(*multi30k_files(s.path, "val", cfg.pair))
                folder_val = (folder_val[0] + v[0], folder_val[1] + v[1])
        else:
            parts.append((s, *read_tsv(s.path, reverse, warn)))
    if cfg.src and cfg.tgt:
        parts.append((Source(cfg.src), *read_pairs(cfg.src, cfg.tgt)))
    valid = None
    if cfg.valid_src or cfg.valid_tgt:
        if not (cfg.valid_src and cfg.valid_tgt):
            raise UsageError("--valid-src and --valid-tgt go together")
        valid = read_pairs(cfg.valid_src, cfg.valid_tgt)
    elif cfg.valid_tsv:
        valid = read_tsv(cfg.valid_tsv, reverse, warn)
    elif folder_val[0]:
        valid = folder_val
    m = mix(parts, english_side, cfg.seed, valid, cfg.valid_sentences, cfg.valid_fraction)
    if cfg.valid_max:
        m.valid_src, m.valid_tgt = m.valid_src[: cfg.valid_max], m.valid_tgt[: cfg.valid_max]
    return m, sl, tl
