"""Greedy and batched beam search over the models' ``encode``/``init_state``/``step`` interface.

Beam search follows fairseq's rules: each step takes the top 2K expansions of the K live beams; an
end-of-sentence among the top K of them finishes a hypothesis; the first K non-EOS expansions stay live;
a sentence is done once it holds K finished hypotheses and no live one scores better than the worst
of them (with beam 1 that happens at the first EOS, so beam 1 is exactly greedy). Finished scores are
normalised with GNMT's length penalty lp(Y) = ((5 + |Y|) / 6) ** alpha (Wu et al. 2016).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from dlkit.tasks.translate.model import BOS, EOS, PAD


@dataclass
class Hypothesis:
    tokens: list[int]
    score: float  # length-normalised log-probability
    logprob: float


def length_penalty(length: int, alpha: float) -> float:
    return ((5.0 + length) / 6.0) ** alpha


def _select(tree: dict, idx: torch.Tensor) -> dict:
    return {k: v.index_select(0, idx) for k, v in tree.items()}


def _max_lens(src: torch.Tensor, ratio: float, offset: int, limit: int) -> torch.Tensor:
    lens = (src != PAD).sum(1)
    return (lens.float() * ratio + offset).long().clamp(max=limit)


def _log_probs(logits: torch.Tensor, t: int) -> torch.Tensor:
    lp = torch.log_softmax(logits.float(), -1)
    lp[:, PAD] = float("-inf")
    lp[:, BOS] = float("-inf")
    if t == 0:  # at least one token: an empty translation is never the answer
        lp[:, EOS] = float("-inf")
    return lp


@torch.no_grad()
def greedy(model, src: torch.Tensor, max_len_ratio: float = 1.5, max_len_offset: int = 10,
           need_attention: bool = False) -> tuple[list[list[int]], list[float], list]:
    """Argmax decoding of a batch ``src`` (B, S) -> token lists (no bos/eos), log-probs, attention rows."""
    B = src.size(0)
    enc = model.encode(src)
    state = model.init_state(enc)
    limit = _max_lens(src, max_len_ratio, max_len_offset, model.cfg.max_len)
    y = torch.full((B,), BOS, dtype=torch.long, device=src.device)
    out = [[] for _ in range(B)]
    attn = [[] for _ in range(B)]
    logp = [0.0] * B
    done = torch.zeros(B, dtype=torch.bool, device=src.device)
    for t in range(int(limit.max()) + 1):
        logits, state, w = model.step(enc, state, y, need_weights=need_attention)
        lp = _log_probs(logits, t)
        best, y = lp.max(-1)
        y = torch.where(limit <= t, torch.full_like(y, EOS), y)  # length limit reached: end it
        for i in torch.nonzero(~done).flatten().tolist():
            tok = int(y[i])
            logp[i] += float(best[i]) if limit[i] > t else 0.0
            if tok == EOS:
                done[i] = True
            else:
                out[i].append(tok)
                if need_attention and w is not None:
                    attn[i].append(w[i].float().cpu())
        if bool(done.all()):
            break
    return out, logp, attn


@torch.no_grad()
def beam_search(model, src: torch.Tensor, beam: int = 5, n_best: int = 1, alpha: float = 0.6,
                max_len_ratio: float = 1.5, max_len_offset: int = 10) -> list[list[Hypothesis]]:
    """Batched beam search: for each sentence of ``src`` (B, S), its ``n_best`` hypotheses, best first."""
    B, K, dev = src.size(0), beam, src.device
    enc = model.encode(src)
    rep = torch.arange(B, device=dev).repeat_interleave(K)
    enc = _select(enc, rep)  # (B*K, ...)
    state = model.init_state(enc)
    limit = _max_lens(src, max_len_ratio, max_len_offset, model.cfg.max_len)  # (B,)
    finished: list[list[Hypothesis]] = [[] for _ in range(B)]
    active = torch.arange(B, device=dev)  # original sentence index of each row block
    scores = torch.full((B, K), float("-inf"), device=dev)
    scores[:, 0] = 0.0  # all beams start identical: only the first may expand
    tokens = torch.full((B * K, 0), BOS, dtype=torch.long, device=dev)
    y = torch.full((B * K,), BOS, dtype=torch.long, device=dev)
    t = 0
    while active.numel():
        n = active.numel()
        logits, state, _ = model.step(enc, state, y)
        lp = _log_probs(logits, t).view(n, K, -1)  # (n, K, V)
        V = lp.size(-1)
        at_limit = limit[active] <= t  # (n,)
        if bool(at_limit.any()):  # only EOS may follow at the length limit
            forced = torch.full_like(lp[0, 0], float("-inf"))
            forced[EOS] = 0.0
            lp[at_limit] = forced
        cand = (scores[:, :, None] + lp).view(n, K * V)
        top_s, top_i = cand.topk(2 * K, dim=1)  # (n, 2K), sorted
        top_beam, top_tok = top_i // V, top_i % V
        is_eos = top_tok == EOS
        # finish EOS expansions ranked among the first K; each sentence keeps its K best finished
        for r, j in torch.nonzero(is_eos[:, :K] & torch.isfinite(top_s[:, :K])).tolist():
            row = r * K + int(top_beam[r, j])
            toks = tokens[row].tolist()
            s = float(top_s[r, j])
            hyps = finished[int(active[r])]
            hyps.append(Hypothesis(toks, s / length_penalty(len(toks) + 1, alpha), s))
            hyps.sort(key=lambda h: -h.score)
            del hyps[K:]
        # keep the first K non-EOS expansions live
        live_s = top_s.masked_fill(is_eos, float("-inf"))
        keep_s, keep_j = live_s.topk(K, dim=1)  # (n, K)
        keep_beam = top_beam.gather(1, keep_j)
        keep_tok = top_tok.gather(1, keep_j)
        rows = (torch.arange(n, device=dev)[:, None] * K + keep_beam).flatten()
        tokens = torch.cat([tokens.index_select(0, rows), keep_tok.flatten()[:, None]], 1)
        state = _select(state, rows)
        scores = keep_s
        y = keep_tok.flatten()
        t += 1
        # a sentence is done when K hypotheses finished and no live one can still beat the worst of them
        best_live = (scores[:, 0] / length_penalty(t + 1, alpha)).tolist()
        still = torch.tensor([len(finished[b]) < K or best_live[r] > finished[b][-1].score
                              for r, b in enumerate(active.tolist())], device=dev)
        still &= torch.isfinite(scores).any(1)
        if not bool(still.all()):
            keep_rows = torch.nonzero(still).flatten()
            flat = (keep_rows[:, None] * K + torch.arange(K, device=dev)).flatten()
            active, scores = active[keep_rows], scores[keep_rows]
            tokens, y = tokens.index_select(0, flat), y.index_select(0, flat)
            state, enc = _select(state, flat), _select(enc, flat)
    out = []
    for hyps in finished:
        hyps.sort(key=lambda h: -h.score)
        out.append(hyps[:n_best] or [Hypothesis([], float("-inf"), float("-inf"))])
    return out
