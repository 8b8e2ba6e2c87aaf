"""Translation as a stream: lines in, one result per line out, in order, decoded in length-sorted batches."""

from __future__ import annotations

from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Callable, Iterable, Iterator

import torch

from dlkit.core import checkpoint as ckpt
from dlkit.core.errors import DlkitError, ModelFileError
from dlkit.tasks.translate.data import TextPipeline, pad
from dlkit.tasks.translate.decode import beam_search, greedy
from dlkit.tasks.translate.model import Seq2SeqConfig, build_model

TASK = "translate"


@dataclass
class DecodeConfig:
    beam: int = 5
    n_best: int = 1
    alpha: float = 0.6  # GNMT length penalty
    max_len_ratio: float = 1.5
    batch_size: int = 64


@dataclass
class Translator:
    model: torch.nn.Module
    pipe: TextPipeline
    meta: dict
    device: torch.device
    first_source: str | None = None  # first non-blank input seen (for --attention-plot with stdin)


def load_translator(path, device="cpu") -> Translator:
    """Model and text pipeline from a dlkit 'translate' model file (checked, never unpickled)."""
    tensors, meta = ckpt.load_model_file(path, TASK)
    try:
        cfg = Seq2SeqConfig(**meta["config"])
        pipe = TextPipeline.from_meta(meta["text"])
        model = build_model(cfg)
        model.load_state_dict({k: v.float() for k, v in tensors.items()})
    except (KeyError, TypeError, RuntimeError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelFileError(f"'{path}' is not a usable translate model: {first[:200]}") from None
    model.to(device).eval()
    return Translator(model, pipe, meta, torch.device(device))


def _batches(lines: Iterable[str], size: int) -> Iterator[list[str]]:
    it = iter(lines)
    while chunk := list(islice(it, size)):
        yield chunk


@torch.no_grad()
def translate_stream(tr: Translator, lines: Iterable[str], dc: DecodeConfig,
                     warn: Callable[[str], None] | None = None) -> Iterator[dict]:
    """For every input line, in order, a dict: source, translation, score, n_best (list of dicts).

    Blank lines (and lines with nothing translatable) give an empty translation. Lines longer than the
    model's limit are cut, with one warning. The last result of each batch carries ``flush=True``."""
    limit, warned = tr.model.cfg.max_len, False
    for chunk in _batches(lines, dc.batch_size):
        ids = []
        for line in chunk:
            x = tr.pipe.encode_src(line) if line.strip() else []
            if len(x) > limit:
                if warn and not warned:
                    warn(f"a line has {len(x):,} subwords; cut to the model's limit of {limit} (further long lines are cut silently)")
                    warned = True
                x = x[:limit]
            if x and tr.first_source is None:
                tr.first_source = line
            ids.append(x)
        results = [_empty(line) for line in chunk]
        todo = sorted((i for i, x in enumerate(ids) if x), key=lambda i: len(ids[i]))
        if todo:
            src = pad([ids[i] for i in todo], tr.device)
            for i, hyps in zip(todo, _decode(tr.model, src, dc)):
                nb = [{"translation": tr.pipe.decode_tgt(toks), "score": round(score, 4)} for toks, score in hyps]
                results[i] = {"source": chunk[i], "translation": nb[0]["translation"], "score": nb[0]["score"],
                              "n_best": nb}
        results[-1]["flush"] = True
        yield from results


def _empty(line: str) -> dict:
    return {"source": line, "translation": "", "score": 0.0, "n_best": []}


def _decode(model, src: torch.Tensor, dc: DecodeConfig) -> list[list[tuple[list[int], float]]]:
    if dc.beam == 1:
        out, logp, _ = greedy(model, src, dc.max_len_ratio)
        return [[(toks, lp)] for toks, lp in zip(out, logp)]
    hyps = beam_search(model, src, dc.beam, dc.n_best, dc.alpha, dc.max_len_ratio)
    return [[(h.tokens, h.score) for h in hs] for hs in hyps]


def translate_lines(tr: Translator, lines: list[str], dc: DecodeConfig | None = None) -> list[str]:
    """Convenience: translations of a list of lines."""
    return [r["translation"] for r in translate_stream(tr, lines, dc or DecodeConfig())]


@torch.no_grad()
def attention_matrix(tr: Translator, sentence: str) -> tuple[torch.Tensor, list[str], list[str]]:
    """Greedy translation of ``sentence`` with its cross-attention weights (T_out, S) and the subword labels."""
    if tr.model.cfg.arch == "lstm":
        raise DlkitError("the 'lstm' architecture (Sutskever et al.) has no attention to plot; use an "
                         "lstm-attention or transformer model")
    ids = tr.pipe.encode_src(sentence)[: tr.model.cfg.max_len]
    if not ids:
        raise DlkitError("nothing to translate in the sentence chosen for --attention-plot")
    out, _, attn = greedy(tr.model, pad([ids], tr.device), need_attention=True)
    mat = torch.stack(attn[0]) if attn[0] else torch.zeros(0, len(ids))
    return mat, tr.pipe.src_sp.pieces(ids), tr.pipe.tgt_sp.pieces(out[0])


def plot_attention(tr: Translator, sentence: str, path: str | Path) -> Path:
    """Bahdanau et al. 2015 (fig. 3)-style heatmap of source/target alignment, written atomically as PNG."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    mat, src, tgt = attention_matrix(tr, sentence)
    fig, ax = plt.subplots(figsize=(max(4, 0.4 * len(src) + 2), max(3, 0.4 * len(tgt) + 2)))
    ax.imshow(mat.numpy(), cmap="gray", aspect="auto", vmin=0, vmax=1)
    ax.set_xticks(range(len(src)), src, rotation=90)
    ax.set_yticks(range(len(tgt)), tgt)
    ax.set_xlabel("source")
    ax.set_ylabel("translation")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return ckpt.atomic_write_bytes(path, buf.getvalue())
