"""``dlkit translate --eval TEST.tsv``: translate a test TSV with one or more models and score each with sacreBLEU
(detokenised, signature) and chrF, so that a general model and a Multi30k model sit in one table."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from dlkit.core.errors import UsageError
from dlkit.tasks.translate.corpus import read_tsv
from dlkit.tasks.translate.infer import DecodeConfig, load_translator, translate_lines
from dlkit.text.bleu import chrf, corpus_bleu


@dataclass
class EvalRow:
    model: str
    bleu: float
    chrf: float
    seconds: float


@dataclass
class EvalResult:
    test: str
    pairs: int
    src_lang: str
    tgt_lang: str
    beam: int
    bleu_signature: str = ""
    chrf_signature: str = ""
    rows: list[EvalRow] = field(default_factory=list)

    def table(self) -> str:
        w = max([24] + [len(r.model) for r in self.rows])
        lines = [f"{Path(self.test).name}: {self.pairs:,} pairs, {self.src_lang} -> {self.tgt_lang}, beam {self.beam}",
                 f"{'model':<{w}} {'BLEU':>6} {'chrF':>6} {'seconds':>8}"]
        lines += [f"{r.model:<{w}} {r.bleu:>6.2f} {r.chrf:>6.2f} {r.seconds:>8.1f}" for r in self.rows]
        lines += [f"BLEU signature: {self.bleu_signature}", f"chrF signature: {self.chrf_signature}"]
        return "\n".join(lines)

    def to_json(self) -> dict:
        return {**{k: v for k, v in asdict(self).items() if k != "rows"},
                "results": {r.model: {"bleu": r.bleu, "chrf": r.chrf, "seconds": r.seconds} for r in self.rows}}


def evaluate_models(test: str, models: list[str], dc: DecodeConfig, rt, report) -> EvalResult:
    """Every model translates the TSV's sources (``english<TAB>other``, swapped for an xx-en model); all models
    must translate the same pair. Bad lines of the TSV are skipped with a warning, as in training."""
    trs = [load_translator(m, rt) for m in models]
    langs = {(t.pipe.src_lang, t.pipe.tgt_lang) for t in trs}
    if len(langs) > 1:
        raise UsageError("--eval compares models of one language pair; these translate "
                         + ", ".join(f"{s}-{t}" for s, t in sorted(langs)))
    sl, tl = langs.pop()
    src, ref = read_tsv(test, reverse=tl == "en" and sl != "en", warn=report.warn)
    res = EvalResult(test, len(src), sl, tl, dc.beam)
    for name, tr in zip(models, trs):
        t0 = time.monotonic()
        hyps = translate_lines(tr, src, dc)
        b, c = corpus_bleu(hyps, ref), chrf(hyps, ref)
        res.bleu_signature, res.chrf_signature = b.signature, c.signature
        res.rows.append(EvalRow(str(name).removesuffix(".safetensors"), b.score, c.score,  # a name, or the path
                                round(time.monotonic() - t0, 1)))
        report.info(f"{res.rows[-1].model}: BLEU {b.score:.2f}, chrF {c.score:.2f} on {len(src):,} sentences")
    return res
