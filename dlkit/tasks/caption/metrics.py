"""Caption metrics: corpus BLEU-1..4 against all references and CIDEr-D.

Both score the same tokenised, lower-cased text (:func:`dlkit.tasks.caption.vocab.normalize`).

CIDEr-D (Vedantam, Zitnick, Parikh, CVPR 2015) exactly as coco-caption / pycocoevalcap compute it:
TF-IDF vectors of 1..4-grams, the document frequency counted over the references of the scored set,
cosine similarity per n with the candidate's counts clipped at the reference's, a Gaussian length
penalty exp(-delta^2 / (2 sigma^2)) with sigma = 6, the mean over n and over references, times 10.
(pycocoevalcap measures "length" as the number of bigrams; we keep that so the numbers agree.)
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict


def _ngrams(words: list[str], n: int = 4) -> Counter:
    c: Counter = Counter()
    for k in range(1, n + 1):
        for i in range(len(words) - k + 1):
            c[tuple(words[i : i + k])] += 1
    return c


def cider_d(hyps: list[str], refs: list[list[str]], n: int = 4, sigma: float = 6.0) -> tuple[float, list[float]]:
    """Corpus CIDEr-D and the per-caption scores of tokenised ``hyps`` against tokenised ``refs`` lists."""
    if len(hyps) != len(refs):
        raise ValueError(f"{len(hyps)} hypotheses but {len(refs)} reference lists")
    if not hyps:
        return 0.0, []
    ctest = [_ngrams(h.split(), n) for h in hyps]
    crefs = [[_ngrams(r.split(), n) for r in rs] for rs in refs]
    df: defaultdict = defaultdict(float)
    for rs in crefs:
        for g in set(g for r in rs for g in r):
            df[g] += 1
    ref_len = math.log(float(len(crefs)))

    def vec(counts: Counter):
        v = [dict() for _ in range(n)]
        norm = [0.0] * n
        length = 0
        for g, tf in counts.items():
            k = len(g) - 1
            v[k][g] = float(tf) * (ref_len - math.log(max(1.0, df[g])))
            norm[k] += v[k][g] ** 2
            if k == 1:  # pycocoevalcap's length: the number of bigrams
                length += tf
        return v, [math.sqrt(x) for x in norm], length

    scores = []
    for test, rs in zip(ctest, crefs):
        vh, nh, lh = vec(test)
        total = [0.0] * n
        for r in rs:
            vr, nr, lr = vec(r)
            penalty = math.exp(-((lh - lr) ** 2) / (2 * sigma**2))
            for k in range(n):
                val = sum(min(x, vr[k].get(g, 0.0)) * vr[k].get(g, 0.0) for g, x in vh[k].items())
                if nh[k] != 0 and nr[k] != 0:
                    val /= nh[k] * nr[k]
                total[k] += val * penalty
        scores.append(sum(total) / n / max(len(rs), 1) * 10.0)
    return sum(scores) / len(scores), scores


def bleu_1_4(hyps: list[str], refs: list[list[str]]) -> dict[str, float]:
    """Corpus BLEU-1..4 (cumulative, uniform weights, closest reference length, as coco-caption) in [0, 1].

    sacreBLEU (``max_ngram_order`` 1..4, ``tokenize='none'``) on the already tokenised text, so the numbers
    follow the captioning literature's convention rather than sacreBLEU's own tokeniser. The reference
    streams are laid out as :mod:`dlkit.text.bleu` does (``None`` where an image has fewer references);
    that module's ``corpus_bleu`` has no n-gram order parameter, hence the direct call."""
    from sacrebleu.metrics import BLEU

    n = max((len(r) for r in refs), default=1)
    streams = [[r[k] if k < len(r) else None for r in refs] for k in range(n)]
    return {f"bleu{k}": BLEU(max_ngram_order=k, tokenize="none", force=True).corpus_score(list(hyps), streams).score / 100
            for k in range(1, 5)}


def caption_scores(hyps: list[str], refs: list[list[str]]) -> dict[str, float]:
    """BLEU-1..4 and CIDEr-D of normalised captions (BLEU in [0, 1], as captioning papers report it)."""
    scores = bleu_1_4(hyps, refs)
    scores["cider_d"] = cider_d(hyps, refs)[0]
    return {k: round(float(v), 4) for k, v in scores.items()}
