"""Corpus BLEU and chrF through sacreBLEU, with its signature, one or several references per hypothesis.

``refs`` is either one reference per hypothesis (``list[str]``) or, for several, a list of reference lists
(``refs[i]`` holds the references of ``hyps[i]``; their number may vary, as in COCO/Flickr captions).

:func:`translation_bleu` is what ``translate`` reports: sacreBLEU on detokenised text and, for comparison
with the Multi30k literature (the multi-bleu.perl era), BLEU on lower-cased Moses-tokenised text.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence


@dataclass
class Score:
    score: float  # 0-100, rounded to 2 decimals
    signature: str  # sacreBLEU's, e.g. nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:2.6.0
    sentences: int

    def __str__(self) -> str:
        return f"{self.score:.2f} ({self.signature})"


def _streams(hyps: Sequence[str], refs) -> list[list[str | None]]:
    """sacreBLEU's layout: one stream per reference position; ``None`` where a hypothesis has fewer."""
    if len(refs) != len(hyps):
        raise ValueError(f"{len(hyps)} hypotheses but {len(refs)} reference entries")
    per = [[r] if isinstance(r, str) else list(r) for r in refs]
    if any(not p for p in per):
        raise ValueError("every hypothesis needs at least one reference")
    n = max((len(p) for p in per), default=1)
    return [[p[k] if k < len(p) else None for p in per] for k in range(n)]


def corpus_bleu(hyps: Sequence[str], refs, tokenize: str | None = None, lowercase: bool = False,
                force: bool = False, max_ngram_order: int = 4) -> Score:
    """sacreBLEU corpus BLEU (default 13a tokenisation, exponential smoothing) with its signature.

    ``max_ngram_order`` 1..4 gives the cumulative BLEU-1..BLEU-4 that captioning papers report (with
    ``tokenize="none"`` on text tokenised beforehand)."""
    from sacrebleu.metrics import BLEU

    kw = {"lowercase": lowercase, "force": force, "max_ngram_order": max_ngram_order}
    if tokenize is not None:
        kw["tokenize"] = tokenize
    metric = BLEU(**kw)
    result = metric.corpus_score(list(hyps), _streams(hyps, refs))
    return Score(round(result.score, 2), str(metric.get_signature()), len(hyps))


def chrf(hyps: Sequence[str], refs, word_order: int = 0) -> Score:
    """sacreBLEU chrF (``word_order=2``: chrF++)."""
    from sacrebleu.metrics import CHRF

    metric = CHRF(word_order=word_order)
    result = metric.corpus_score(list(hyps), _streams(hyps, refs))
    return Score(round(result.score, 2), str(metric.get_signature()), len(hyps))


def lc_tok_bleu(hyps: Sequence[str], refs, lang: str = "en") -> float:
    """BLEU on lower-cased, Moses-tokenised text (multi-bleu.perl's convention in the Multi30k papers)."""
    from sacremoses import MosesTokenizer

    tok = MosesTokenizer(lang=lang)

    def lt(s: str | None) -> str | None:
        return None if s is None else " ".join(tok.tokenize(s.lower(), escape=False))

    streams = _streams(hyps, refs)
    from sacrebleu.metrics import BLEU

    result = BLEU(tokenize="none", force=True).corpus_score([lt(h) for h in hyps], [[lt(r) for r in s] for s in streams])
    return round(result.score, 2)


@dataclass
class BleuResult:
    sacrebleu: float
    signature: str
    lc_tok: float
    sentences: int

    def summary(self) -> str:
        return (f"sacreBLEU {self.sacrebleu:.2f} ({self.signature}); "
                f"lower-cased tokenised BLEU {self.lc_tok:.2f}; {self.sentences} sentences")


def translation_bleu(hyps: Sequence[str], refs, lang: str = "en") -> BleuResult:
    """What ``dlkit translate --ref`` and translate-train's validation report."""
    s = corpus_bleu(hyps, refs)
    return BleuResult(s.score, s.signature, lc_tok_bleu(hyps, refs, lang), len(hyps))
