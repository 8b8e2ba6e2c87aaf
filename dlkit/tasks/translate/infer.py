"""Translation as a stream: lines in, one result per line out, in order, decoded in length-sorted batches.

Each line is split into sentences (the models were trained on one sentence per line), the sentences of a
batch of lines are translated together, and each line's translations are joined back into one line.
Memory is bounded by the input's real size: a line is cut to ``max_line_chars`` characters and a
sentence to what the model can take (``max_len`` subwords, about ``CHARS_PER_SUBWORD`` characters each)
BEFORE Moses tokenisation, whose cost grows with the text it is given.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Callable, Iterable, Iterator

import torch

from dlkit.core.atomic import atomic_write_bytes
from dlkit.core.loader import load_model
from dlkit.core.config import config_from_dict
from dlkit.core.errors import DlkitError, ModelFileError
from dlkit.core.runtime import Runtime
from dlkit.tasks.translate.data import TextPipeline, pad
from dlkit.tasks.translate.model import ARCHS, Seq2SeqConfig, build_model
from dlkit.text.search import decode, greedy, max_lengths
from dlkit.text.sentences import join_sentences, split_sentences
from dlkit.text.tokens import PAD

TASK = "translate"
CHARS_PER_SUBWORD = 16  # a sentence longer than max_len * this many characters cannot fit the model
MAX_LINE_CHARS = 100_000


@dataclass
class DecodeConfig:
    beam: int = 5
    n_best: int = 1
    alpha: float = 0.6  # GNMT length penalty
    max_len_ratio: float = 1.5
    batch_size: int = 64  # lines read together; their sentences are decoded in batches of this size
    split: bool = True  # split lines into sentences
    max_line_chars: int = MAX_LINE_CHARS


@dataclass
class Translator:
    model: torch.nn.Module
    pipe: TextPipeline
    meta: dict
    rt: Runtime

    @property
    def device(self) -> torch.device:
        return self.rt.device


def as_runtime(rt: Runtime | str | torch.device | None) -> Runtime:
    """A Runtime as given, or an fp32 one on the named device (library callers and tests)."""
    if isinstance(rt, Runtime):
        return rt
    return Runtime(torch.device(rt or "cpu"), "fp32")


def _build(meta: dict) -> torch.nn.Module:
    cfg = config_from_dict(Seq2SeqConfig, meta.get("config"))
    if cfg.arch not in ARCHS:
        raise ValueError(f"unknown architecture {cfg.arch!r}")
    return build_model(cfg)


def load_translator(spec, rt: Runtime | str | torch.device | None = None) -> Translator:
    """Model and text pipeline from a 'translate' model file or bundled name (checked, never unpickled)."""
    rt = as_runtime(rt)
    model, meta = load_model(spec, TASK, _build, rt.device)
    try:
        pipe = TextPipeline.from_meta(meta["text"])
    except (KeyError, TypeError, RuntimeError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelFileError(f"'{meta.get('path', spec)}' is not a usable translate model: its text pipeline "
                             f"cannot be read ({first[:160]})") from None
    return Translator(model, pipe, meta, rt)


def _batches(lines: Iterable[str], size: int) -> Iterator[list[str]]:
    it = iter(lines)
    while chunk := list(islice(it, size)):
        yield chunk


class _Cutter:
    """Cuts over-long lines and sentences, with one warning for all of them."""

    def __init__(self, tr: Translator, dc: DecodeConfig, warn: Callable[[str], None] | None):
        self.limit = tr.model.cfg.max_len
        self.chars = self.limit * CHARS_PER_SUBWORD
        self.dc, self.warn, self.warned = dc, warn, False

    def _say(self, msg: str) -> None:
        if self.warn and not self.warned:
            self.warn(msg + " (further long lines are cut silently)")
            self.warned = True

    def line(self, line: str) -> str:
        if len(line) > self.dc.max_line_chars:
            self._say(f"a line of {len(line):,} characters was cut to its first {self.dc.max_line_chars:,}")
            return line[: self.dc.max_line_chars]
        return line

    def encode(self, tr: Translator, sentence: str) -> list[int]:
        cut = len(sentence) > self.chars
        x = tr.pipe.encode_src(sentence[: self.chars] if cut else sentence)
        if cut or len(x) > self.limit:
            size = f"{len(sentence):,} characters" if cut else f"{len(x):,} subwords"
            self._say(f"a sentence of {size} was cut to the model's limit of {self.limit} subwords")
            x = x[: self.limit]
        return x


@torch.no_grad()
def translate_stream(tr: Translator, lines: Iterable[str], dc: DecodeConfig,
                     warn: Callable[[str], None] | None = None) -> Iterator[dict]:
    """For every input line, in order, a dict: source, translation, score, n_best (list of dicts).

    Blank lines (and lines with nothing translatable) give an empty translation. A line of several
    sentences gives their translations joined; its score is the sum of theirs, and its k-th n-best
    entry joins each sentence's k-th best. The last result of each batch carries ``flush=True``."""
    cut = _Cutter(tr, dc, warn)
    src_lang, tgt_lang = tr.pipe.src_lang, tr.pipe.tgt_lang
    for chunk in _batches(lines, dc.batch_size):
        units: list[list[int]] = []  # subword ids of every sentence of the chunk
        owner: list[list[int]] = []  # per line: its sentences' unit indices
        for line in chunk:
            line = cut.line(line)
            sentences = split_sentences(line, src_lang) if dc.split else ([line] if line.strip() else [])
            mine = []
            for s in sentences:
                x = cut.encode(tr, s)
                if x:
                    mine.append(len(units))
                    units.append(x)
            owner.append(mine)
        hyps = _decode_units(tr, units, dc)
        results = []
        for line, mine in zip(chunk, owner):
            if not mine:
                results.append(_empty(line))
                continue
            k_best = min(len(hyps[u]) for u in mine)
            nb = []
            for k in range(k_best):
                text = join_sentences([tr.pipe.decode_tgt(hyps[u][k][0]) for u in mine], tgt_lang)
                nb.append({"translation": text, "score": round(sum(hyps[u][k][1] for u in mine), 4)})
            results.append({"source": line, "translation": nb[0]["translation"], "score": nb[0]["score"], "n_best": nb})
        results[-1]["flush"] = True
        yield from results


def _empty(line: str) -> dict:
    return {"source": line, "translation": "", "score": 0.0, "n_best": []}


def _decode_units(tr: Translator, units: list[list[int]], dc: DecodeConfig) -> list[list[tuple[list[int], float]]]:
    """n-best (tokens, score) lists of every unit, decoded in length-sorted batches of ``dc.batch_size``."""
    out: list = [None] * len(units)
    order = sorted(range(len(units)), key=lambda i: len(units[i]))
    model = tr.model
    for k in range(0, len(order), dc.batch_size):
        idx = order[k : k + dc.batch_size]
        src = pad([units[i] for i in idx], tr.device)
        with tr.rt.autocast():
            enc = model.encode(src)
            lens = max_lengths((src != PAD).sum(1), dc.max_len_ratio, 10, model.cfg.max_len)
            nbest = decode(model, enc, lens, dc.beam, dc.n_best, dc.alpha)
        for i, hs in zip(idx, nbest):
            out[i] = [(h.tokens, h.score) for h in hs]
    return out


def translate_lines(tr: Translator, lines: list[str], dc: DecodeConfig | None = None) -> list[str]:
    """Convenience: translations of a list of lines."""
    return [r["translation"] for r in translate_stream(tr, lines, dc or DecodeConfig())]


@torch.no_grad()
def attention_matrix(tr: Translator, sentence: str) -> tuple[torch.Tensor, list[str], list[str]]:
    """Greedy translation of the first sentence of ``sentence`` with its cross-attention weights (T_out, S)
    and the subword labels."""
    if tr.model.cfg.arch == "lstm":
        raise DlkitError("the 'lstm' architecture (Sutskever et al.) has no attention to plot; use an "
                         "lstm-attention or transformer model")
    first = (split_sentences(sentence[:MAX_LINE_CHARS], tr.pipe.src_lang) or [""])[0]
    ids = tr.pipe.encode_src(first[: tr.model.cfg.max_len * CHARS_PER_SUBWORD])[: tr.model.cfg.max_len]
    if not ids:
        raise DlkitError("nothing to translate in the sentence chosen for --attention-plot")
    src = pad([ids], tr.device)
    with tr.rt.autocast():
        enc = tr.model.encode(src)
        hyp = greedy(tr.model, enc, max_lengths((src != PAD).sum(1), 1.5, 10, tr.model.cfg.max_len),
                     need_attention=True)[0]
    mat = hyp.attention if hyp.attention is not None else torch.zeros(0, len(ids))
    return mat, tr.pipe.src_sp.pieces(ids), tr.pipe.tgt_sp.pieces(hyp.tokens)


def plot_attention(tr: Translator, sentence: str, path: str | Path) -> Path:
    """Bahdanau et al. 2015 (fig. 3)-style heatmap of source/target alignment, written atomically as PNG."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    mat, src, tgt = attention_matrix(tr, sentence)
    fig, ax = plt.subplots(figsize=(max(4, 0.4 * len(src) + 2), max(3, 0.4 * len(tgt) + 2)))
    ax.imshow(mat.float().numpy(), cmap="gray", aspect="auto", vmin=0, vmax=1)
    ax.set_xticks(range(len(src)), src, rotation=90)
    ax.set_yticks(range(len(tgt)), tgt)
    ax.set_xlabel("source")
    ax.set_ylabel("translation")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return atomic_write_bytes(path, buf.getvalue())
