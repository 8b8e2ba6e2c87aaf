"""What ``dlkit translate`` does, as one function over a job that validates itself: read the lines (arguments or
a stream), translate them in order with progress on stderr, then the alignment figure and BLEU when asked.

The command only parses, builds a :class:`TranslateJob` and prints each result with its ``emit``.
"""

from __future__ import annotations

import sys
from contextlib import ExitStack, closing
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator

from dlkit.core.errors import DataError, UsageError
from dlkit.tasks.translate.infer import DecodeConfig, load_translator, plot_attention, translate_stream


@dataclass
class TranslateJob:
    """Translate ``texts`` (None: the lines of ``stdin``) with ``model``; ``ref``: a file of reference
    translations to score against; ``attention_plot``: where to write the first sentence's alignment."""

    model: str | None = None  # None: the bundled model for English -> ``to`` (see bundled.default_model)
    decode: DecodeConfig = field(default_factory=DecodeConfig)
    texts: list[str] | None = None
    ref: str | None = None
    attention_plot: str | None = None
    to: str | None = None  # target language of the bundled model (default fr)

    def __post_init__(self) -> None:
        from dlkit.tasks.translate.bundled import default_model

        if self.model is not None and self.to is not None:
            raise UsageError("give --model or --to, not both (--to picks a bundled model)")
        if self.model is None:
            self.model = default_model(self.to)
        if self.decode.n_best > self.decode.beam:
            raise UsageError(f"--n-best {self.decode.n_best} needs --beam of at least {self.decode.n_best}")


@dataclass
class TranslateResult:
    lines: int = 0  # results delivered
    delivered: bool = True  # False: the reader of stdout left before the end
    bleu: object | None = None  # dlkit.text.bleu.BleuResult with --ref
    attention_plot: str | None = None


def translate_job(job: TranslateJob, rt, report, emit: Callable[[dict], bool], stdin=None) -> TranslateResult:
    """Translate the job's lines in order; ``emit(result)`` prints one (False: stdout closed, stop)."""
    from dlkit.tasks.translate.data import read_lines
    from dlkit.text.lines import bounded_lines, clean_args, count_lines, cut_message, warn_once

    refs = read_lines(job.ref) if job.ref is not None else None  # before the model: a FIFO is read once
    tr = load_translator(job.model, rt)
    dc, limit = job.decode, job.decode.max_line_chars
    cut_warn = warn_once(report.warn)  # one warning for every kind of cut (line read, sentence tokenised)
    stdin = stdin if stdin is not None else sys.stdin.buffer
    total, interactive = None, False
    if job.texts is not None:
        lines: Iterable[str] = clean_args(job.texts, limit, report.warn)
    else:
        interactive = stdin.isatty()
        if interactive:
            dc.batch_size = 1  # typing at a terminal: answer each line at once
        else:
            total = count_lines(stdin)
        lines = bounded_lines(stdin, limit, report.warn, on_cut=lambda n: cut_warn(cut_message(n, limit)))
    results = translate_stream(tr, lines, dc, cut_warn)
    if job.texts is None and not interactive:
        results = _with_progress(results, report, total, dc.batch_size)
    out, hyps, first = TranslateResult(), [], None
    with closing(results):
        for r in results:
            r.pop("flush", None)
            hyps.append(r["translation"])
            if first is None and r["n_best"]:
                first = r["source"]
            out.lines += 1
            if not emit(r):
                out.delivered = False
                break
    if job.attention_plot is not None:
        if first is None:
            report.warn("no non-blank input line: no attention plot written")
        else:
            out.attention_plot = str(plot_attention(tr, first, job.attention_plot))
    if refs is not None and out.delivered:  # (a closed stdout ends the command with exit 141, see core.io)
        out.bleu = _score(tr, hyps, refs, job.ref)
    return out


def _with_progress(results: Iterator[dict], report, total: int | None, batch_size: int) -> Iterator[dict]:
    """Pass results through; once more than one batch of lines came (a file, not a line typed or echoed),
    show progress on stderr: a bar on a terminal (only while stdout is not one too), periodic lines otherwise."""
    if report.rich and sys.stdout.isatty():
        yield from results
        return
    with ExitStack() as stack:
        update, done = None, 0
        for r in results:
            yield r
            done += 1
            if update is None and done > batch_size and (total is None or total > batch_size):
                update = stack.enter_context(report.progress(total, "translate"))
                update(done)
            elif update is not None:
                update(1)


def _score(tr, hyps: list[str], refs: list[str], ref: str):
    from dlkit.text.bleu import translation_bleu

    if len(refs) != len(hyps):
        raise DataError(f"--ref '{ref}' has {len(refs):,} lines but the input had {len(hyps):,}; they must align")
    return translation_bleu(hyps, refs, tr.pipe.tgt_lang)
