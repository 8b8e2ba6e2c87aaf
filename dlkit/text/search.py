"""Greedy and batched beam search for any autoregressive decoder with a three-call step interface.

The model encodes its input once (how is its own business: a source sentence, an image) into ``enc``, a
dict of batch-first tensors, and then offers::

    state = model.init_state(enc)                          # dict of batch-first tensors
    logits, state, weights = model.step(enc, state, y, need_weights=False)
    #   y (B,) the previous token; logits (B, V); weights (B, S) attention over the input, or None

Beam search reorders and expands ``enc`` and ``state`` with ``index_select(0, ...)`` without knowing the
architecture. The caller gives each row's longest output, ``max_lens`` (B,) (see :func:`max_lengths`).

Beam search follows fairseq's rules: each step takes the top 2K expansions of the K live beams; an
end-of-sentence among the top K of them finishes a hypothesis; the first K non-EOS expansions stay live;
a row is done once it holds K finished hypotheses and no live one scores better than the worst of them
(with beam 1 that happens at the first EOS, so beam 1 is exactly greedy). Finished scores are normalised
with GNMT's length penalty lp(Y) = ((5 + |Y|) / 6) ** alpha (Wu et al. 2016), |Y| counting the EOS.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from dlkit.text.tokens import BOS, EOS, PAD


@dataclass
class Hypothesis:
    tokens: list[int]  # without bos/eos
    score: float  # log-probability / length penalty (what beam search ranks by)
    logprob: float  # plain sum of the token log-probabilities (EOS included)
    attention: torch.Tensor | None = None  # (len(tokens), S) on the CPU, with need_attention=True


def length_penalty(length: int, alpha: float) -> float:
    return ((5.0 + length) / 6.0) ** alpha


def max_lengths(src_lens: torch.Tensor, ratio: float = 1.5, offset: int = 10, limit: int | None = None) -> torch.Tensor:
    """Longest output per row: ``ratio * source length + offset``, capped at ``limit``."""
    out = (src_lens.float() * ratio + offset).long()
    return out.clamp(max=limit) if limit is not None else out


def _select(tree: dict, idx: torch.Tensor) -> dict:
    return {k: v.index_select(0, idx) for k, v in tree.items()}


def _log_probs(logits: torch.Tensor, t: int, bos: int, eos: int, pad: int) -> torch.Tensor:
    lp = torch.log_softmax(logits.float(), -1)
    lp[:, pad] = float("-inf")
    lp[:, bos] = float("-inf")
    if t == 0:  # at least one token: an empty output is never the answer
        lp[:, eos] = float("-inf")
    return lp


@torch.no_grad()
def greedy(model, enc: dict, max_lens: torch.Tensor, need_attention: bool = False, alpha: float = 0.6,
           bos: int = BOS, eos: int = EOS, pad: int = PAD) -> list[Hypothesis]:
    """Argmax decoding of a batch: one :class:`Hypothesis` per row of ``enc`` (score normalised as in beam
    search, so beam 1 and greedy report the same numbers); ``need_attention`` keeps the weight rows."""
    B, dev = max_lens.size(0), max_lens.device
    state = model.init_state(enc)
    limit = max_lens.to(dev)
    y = torch.full((B,), bos, dtype=torch.long, device=dev)
    toks: list[list[int]] = [[] for _ in range(B)]
    rows: list[list[torch.Tensor]] = [[] for _ in range(B)]
    logp = torch.zeros(B, dtype=torch.float64)
    done = torch.zeros(B, dtype=torch.bool)
    for t in range(int(limit.max()) + 1 if B else 0):
        logits, state, w = model.step(enc, state, y, need_weights=need_attention)
        lp = _log_probs(logits, t, bos, eos, pad)
        if bool((limit <= t).any()):  # length limit reached: only EOS may follow
            lp[limit <= t] = torch.where(torch.arange(lp.size(1), device=lp.device) == eos, 0.0, float("-inf"))
        best, y = lp.max(-1)
        best, ys = best.double().cpu(), y.cpu()
        live = ~done
        logp += torch.where(live, best, torch.zeros_like(best))
        for i in torch.nonzero(live).flatten().tolist():
            tok = int(ys[i])
            if tok == eos:
                done[i] = True
            else:
                toks[i].append(tok)
                if need_attention and w is not None:
                    rows[i].append(w[i].float().cpu())
        if bool(done.all()):
            break
    return [Hypothesis(toks[i], float(logp[i]) / length_penalty(len(toks[i]) + 1, alpha), float(logp[i]),
                       torch.stack(rows[i]) if rows[i] else None) for i in range(B)]


@torch.no_grad()
def beam_search(model, enc: dict, max_lens: torch.Tensor, beam: int = 5, n_best: int = 1, alpha: float = 0.6,
                need_attention: bool = False, bos: int = BOS, eos: int = EOS, pad: int = PAD) -> list[list[Hypothesis]]:
    """Batched beam search: for each row of ``enc``, its ``n_best`` hypotheses, best first."""
    if n_best > beam:
        raise ValueError(f"n_best ({n_best}) cannot exceed the beam ({beam})")
    B, K, dev = max_lens.size(0), beam, max_lens.device
    rep = torch.arange(B, device=dev).repeat_interleave(K)
    enc = _select(enc, rep)  # (B*K, ...)
    state = model.init_state(enc)
    limit = max_lens.to(dev)
    finished: list[list[Hypothesis]] = [[] for _ in range(B)]
    active = torch.arange(B, device=dev)  # original row of each block of K beams
    scores = torch.full((B, K), float("-inf"), device=dev)
    scores[:, 0] = 0.0  # all beams start identical: only the first may expand
    tokens = torch.full((B * K, 0), bos, dtype=torch.long, device=dev)
    attn = None  # (rows, t, S) with need_attention
    y = torch.full((B * K,), bos, dtype=torch.long, device=dev)
    t = 0
    while active.numel():
        n = active.numel()
        logits, state, w = model.step(enc, state, y, need_weights=need_attention)
        lp = _log_probs(logits, t, bos, eos, pad).view(n, K, -1)  # (n, K, V)
        V = lp.size(-1)
        at_limit = limit[active] <= t  # (n,)
        if bool(at_limit.any()):  # only EOS may follow at the length limit
            forced = torch.full_like(lp[0, 0], float("-inf"))
            forced[eos] = 0.0
            lp[at_limit] = forced
        cand = (scores[:, :, None] + lp).view(n, K * V)
        top_s, top_i = cand.topk(2 * K, dim=1)  # (n, 2K), sorted
        top_beam, top_tok = top_i // V, top_i % V
        is_eos = top_tok == eos
        if need_attention and w is not None:
            step_w = w.float()[:, None]  # (n*K, 1, S)
            attn = step_w if attn is None else torch.cat([attn, step_w], 1)
        _finish(finished, active, top_s, top_beam, is_eos, tokens, attn, K, alpha)
        # keep the first K non-EOS expansions live
        scores, keep_beam, keep_tok = _live(top_s, top_beam, top_tok, is_eos, K)
        rows = (torch.arange(n, device=dev)[:, None] * K + keep_beam).flatten()
        tokens = torch.cat([tokens.index_select(0, rows), keep_tok.flatten()[:, None]], 1)
        if attn is not None:
            attn = attn.index_select(0, rows)
        state = _select(state, rows)
        y = keep_tok.flatten()
        t += 1
        still = _open_rows(finished, active, scores, t, K, alpha)
        if not bool(still.all()):  # drop the rows that are done, with their K beams
            keep_rows = torch.nonzero(still).flatten()
            flat = (keep_rows[:, None] * K + torch.arange(K, device=dev)).flatten()
            active, scores = active[keep_rows], scores[keep_rows]
            tokens, y = tokens.index_select(0, flat), y.index_select(0, flat)
            state, enc = _select(state, flat), _select(enc, flat)
            if attn is not None:
                attn = attn.index_select(0, flat)
    out = []
    for hyps in finished:
        hyps.sort(key=lambda h: -h.score)
        out.append(hyps[:n_best] or [Hypothesis([], float("-inf"), float("-inf"))])
    return out


def _finish(finished: list[list[Hypothesis]], active: torch.Tensor, top_s: torch.Tensor, top_beam: torch.Tensor,
            is_eos: torch.Tensor, tokens: torch.Tensor, attn: torch.Tensor | None, K: int, alpha: float) -> None:
    """Finish the EOS expansions ranked among the first K of each row's top 2K; each row keeps its K best."""
    for r, j in torch.nonzero(is_eos[:, :K] & torch.isfinite(top_s[:, :K])).tolist():
        row = r * K + int(top_beam[r, j])
        toks = tokens[row].tolist()
        s = float(top_s[r, j])
        a = attn[row, : len(toks)].cpu() if attn is not None and toks else None
        hyps = finished[int(active[r])]
        hyps.append(Hypothesis(toks, s / length_penalty(len(toks) + 1, alpha), s, a))
        hyps.sort(key=lambda h: -h.score)
        del hyps[K:]


def _live(top_s: torch.Tensor, top_beam: torch.Tensor, top_tok: torch.Tensor, is_eos: torch.Tensor, K: int):
    """The first K non-EOS expansions of each row: their scores, the beams they extend and their tokens, (n, K)."""
    keep_s, keep_j = top_s.masked_fill(is_eos, float("-inf")).topk(K, dim=1)
    return keep_s, top_beam.gather(1, keep_j), top_tok.gather(1, keep_j)


def _open_rows(finished: list[list[Hypothesis]], active: torch.Tensor, scores: torch.Tensor, t: int, K: int,
               alpha: float) -> torch.Tensor:
    """(n,) bool: rows still open. A row is done when K hypotheses finished and no live one can still beat the
    worst of them, or when no live beam is left."""
    best_live = (scores[:, 0] / length_penalty(t + 1, alpha)).tolist()
    still = torch.tensor([len(finished[b]) < K or best_live[r] > finished[b][-1].score
                          for r, b in enumerate(active.tolist())], device=scores.device)
    return still & torch.isfinite(scores).any(1)


def decode(model, enc: dict, max_lens: torch.Tensor, beam: int = 1, n_best: int = 1, alpha: float = 0.6,
           need_attention: bool = False) -> list[list[Hypothesis]]:
    """Greedy for beam 1, beam search otherwise; always a list of n-best lists."""
    if beam == 1:
        return [[h] for h in greedy(model, enc, max_lens, need_attention=need_attention, alpha=alpha)]
    return beam_search(model, enc, max_lens, beam, n_best, alpha, need_attention=need_attention)
