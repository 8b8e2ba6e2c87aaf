"""BLEU as the field reports it: sacreBLEU on detokenised text (with its signature) and, for comparison
with the Multi30k literature (multi-bleu.perl era), BLEU on lower-cased Moses-tokenised text."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class BleuResult:
    sacrebleu: float
    signature: str
    lc_tok: float
    sentences: int

    def summary(self) -> str:
        return (f"sacreBLEU {self.sacrebleu:.2f} ({self.signature}); "
                f"lower-cased tokenised BLEU {self.lc_tok:.2f}; {self.sentences} sentences")


def bleu(hyps: list[str], refs: list[str], lang: str = "en") -> BleuResult:
    import sacrebleu
    from sacremoses import MosesTokenizer

    metric = sacrebleu.metrics.BLEU()
    score = metric.corpus_score(hyps, [refs])
    tok = MosesTokenizer(lang=lang)

    def lt(s: str) -> str:
        return " ".join(tok.tokenize(s.lower(), escape=False))

    lc = sacrebleu.metrics.BLEU(tokenize="none", force=True).corpus_score([lt(h) for h in hyps], [[lt(r) for r in refs]])
    return BleuResult(round(score.score, 2), str(metric.get_signature()), round(lc.score, 2), len(hyps))
