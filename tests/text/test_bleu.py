"""dlkit.text.bleu against sacreBLEU's own functions on a small multi-reference example."""

from __future__ import annotations

import pytest
import sacrebleu

from dlkit.text.bleu import chrf, corpus_bleu, lc_tok_bleu, translation_bleu

HYPS = ["The cat sat on the mat.", "A dog runs in the park", "two people walk"]
REFS = [["The cat is sitting on the mat.", "A cat sat on the mat."],
        ["A dog is running in the park.", "The dog runs through a park."],
        ["Two people are walking.", "Two persons walk down a street."]]


def test_bleu_equals_sacrebleu_with_several_references():
    streams = [list(r) for r in zip(*REFS)]
    ours = corpus_bleu(HYPS, REFS)
    theirs = sacrebleu.corpus_bleu(HYPS, streams)
    assert ours.score == pytest.approx(round(theirs.score, 2))
    assert "nrefs:2" in ours.signature and "tok:13a" in ours.signature and ours.sentences == 3
    assert corpus_bleu(HYPS, [r[0] for r in REFS]).score == pytest.approx(
        round(sacrebleu.corpus_bleu(HYPS, [streams[0]]).score, 2))  # one reference each: plain strings


def test_variable_number_of_references():
    refs = [REFS[0], REFS[1][:1], REFS[2]]
    ours = corpus_bleu(HYPS, refs)
    theirs = sacrebleu.corpus_bleu(HYPS, [[r[0] for r in refs], [REFS[0][1], None, REFS[2][1]]])
    assert ours.score == pytest.approx(round(theirs.score, 2))


def test_bleu_1_to_4_for_captions():
    streams = [list(r) for r in zip(*REFS)]
    for n in range(1, 5):
        theirs = sacrebleu.metrics.BLEU(max_ngram_order=n, tokenize="none", force=True).corpus_score(HYPS, streams)
        assert corpus_bleu(HYPS, REFS, tokenize="none", force=True, max_ngram_order=n).score == pytest.approx(
            round(theirs.score, 2))


def test_chrf_and_lowercase_tokenised():
    streams = [list(r) for r in zip(*REFS)]
    assert chrf(HYPS, REFS).score == pytest.approx(round(sacrebleu.corpus_chrf(HYPS, streams).score, 2))
    assert chrf(HYPS, REFS, word_order=2).score == pytest.approx(
        round(sacrebleu.corpus_chrf(HYPS, streams, word_order=2).score, 2))
    upper = [h.upper() for h in HYPS]
    assert lc_tok_bleu(upper, REFS) == lc_tok_bleu(HYPS, REFS) > corpus_bleu(upper, REFS).score
    r = translation_bleu(["Un chien court."], ["Un chien court."], "fr")
    assert r.sacrebleu == 100.0 and r.lc_tok == 100.0 and "sacreBLEU 100.00" in r.summary()


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match="hypotheses"):
        corpus_bleu(HYPS, REFS[:2])
    with pytest.raises(ValueError, match="at least one"):
        corpus_bleu(HYPS[:1], [[]])
