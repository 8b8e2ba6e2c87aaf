"""dlkit.text.search on a small random decoder with attention (no training: properties of the search itself)."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from dlkit.nets.attention import LuongAttention
from dlkit.text.search import Hypothesis, beam_search, decode, greedy, length_penalty, max_lengths
from dlkit.text.tokens import BOS, EOS, PAD

V, S, D = 14, 5, 16


class ToyDecoder(nn.Module):
    """A GRU cell attending over a random memory: the step interface that translation and captions share."""

    def __init__(self, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.emb = nn.Embedding(V, D)
        self.cell = nn.GRUCell(D, D)
        self.attn = LuongAttention(D, "general")
        self.out = nn.Linear(2 * D, V)
        with torch.no_grad():
            self.out.bias[EOS] += 1.0  # end sentences after a few tokens

    def encode(self, mem: torch.Tensor, lens: list[int]) -> dict:
        mask = torch.arange(mem.size(1))[None] < torch.tensor(lens)[:, None]
        return {"mem": mem, "mask": mask}

    def init_state(self, enc):
        return {"h": torch.tanh(enc["mem"].sum(1))}

    def step(self, enc, state, y, need_weights=False):
        h = self.cell(self.emb(y), state["h"])
        ctx, w = self.attn(h, enc["mem"], enc["mask"])
        return self.out(torch.cat([h, ctx], -1)), {"h": h}, (w if need_weights else None)


@pytest.fixture(scope="module")
def toy():
    model = ToyDecoder().eval()
    g = torch.Generator().manual_seed(1)
    lens = [5, 3, 4, 1, 2, 5]
    enc = model.encode(torch.randn(len(lens), S, D, generator=g), lens)
    return model, enc


def _logprob(model, enc, row: int, tokens: list[int]) -> float:
    """Sum of log-probabilities of ``tokens`` + EOS for one row, stepping the model by hand."""
    e = {k: v[row : row + 1] for k, v in enc.items()}
    state, y, total = model.init_state(e), torch.tensor([BOS]), 0.0
    with torch.no_grad():
        for tok in tokens + [EOS]:
            logits, state, _ = model.step(e, state, y)
            total += float(torch.log_softmax(logits.float(), -1)[0, tok])
            y = torch.tensor([tok])
    return total


def test_beam_one_equals_greedy(toy):
    model, enc = toy
    lens = torch.full((6,), 12)
    g = greedy(model, enc, lens)
    b = beam_search(model, enc, lens, beam=1)
    assert [h[0].tokens for h in b] == [h.tokens for h in g]
    assert [h[0].score for h in b] == pytest.approx([h.score for h in g], abs=1e-5)
    assert decode(model, enc, lens, beam=1)[2][0].tokens == g[2].tokens


def test_scores_are_the_models_log_probabilities(toy):
    model, enc = toy
    lens = torch.full((6,), 12)
    for row, hyps in enumerate(beam_search(model, enc, lens, beam=3, n_best=3, alpha=0.6)):
        for h in hyps:
            assert h.logprob == pytest.approx(_logprob(model, enc, row, h.tokens), abs=1e-4)
            assert h.score == pytest.approx(h.logprob / length_penalty(len(h.tokens) + 1, 0.6), abs=1e-5)
            assert PAD not in h.tokens and BOS not in h.tokens and EOS not in h.tokens


def test_n_best_sorted_distinct_and_not_worse_than_greedy(toy):
    model, enc = toy
    lens = torch.full((6,), 12)
    greedy_scores = [h.score for h in greedy(model, enc, lens)]
    for hyps, gs in zip(beam_search(model, enc, lens, beam=5, n_best=4), greedy_scores):
        assert len(hyps) == 4 and all(isinstance(h, Hypothesis) for h in hyps)
        scores = [h.score for h in hyps]
        assert scores == sorted(scores, reverse=True)
        assert len({tuple(h.tokens) for h in hyps}) == 4
        assert scores[0] >= gs - 1e-5  # a wider beam never finds a worse best (here)
    with pytest.raises(ValueError):
        beam_search(model, enc, lens, beam=2, n_best=3)


def test_length_limits_per_row(toy):
    model, enc = toy
    with torch.no_grad():
        model.out.bias[EOS] -= 50.0  # never wants to stop: the limit decides
    try:
        lens = torch.tensor([0, 1, 2, 3, 7, 4])
        for hyps in (greedy(model, enc, lens), [h[0] for h in beam_search(model, enc, lens, beam=3)]):
            assert [len(h.tokens) for h in hyps] == lens.tolist()
            assert all(h.score > float("-inf") for h in hyps)
    finally:
        with torch.no_grad():
            model.out.bias[EOS] += 50.0


def test_batched_equals_one_row_at_a_time(toy):
    model, enc = toy
    lens = torch.tensor([12, 6, 12, 9, 12, 3])
    batched = beam_search(model, enc, lens, beam=4, n_best=2)
    for row in range(6):
        one = beam_search(model, {k: v[row : row + 1] for k, v in enc.items()}, lens[row : row + 1], beam=4, n_best=2)[0]
        assert [h.tokens for h in one] == [h.tokens for h in batched[row]]


def test_attention_rows_follow_the_tokens(toy):
    model, enc = toy
    lens = torch.full((6,), 12)
    mask = enc["mask"]
    for row, h in enumerate(greedy(model, enc, lens, need_attention=True)):
        assert h.attention.shape == (len(h.tokens), S)
        assert torch.allclose(h.attention.sum(1), torch.ones(len(h.tokens)), atol=1e-5)
        assert (h.attention[:, ~mask[row]] == 0).all()
    g = greedy(model, enc, lens, need_attention=True)
    b = beam_search(model, enc, lens, beam=1, need_attention=True)
    for gh, bh in zip(g, b):
        assert torch.allclose(gh.attention, bh[0].attention, atol=1e-6)
    for hyps in beam_search(model, enc, lens, beam=3, n_best=3, need_attention=True):
        assert all(h.attention.shape == (len(h.tokens), S) for h in hyps)


def test_max_lengths():
    assert max_lengths(torch.tensor([0, 4, 100]), 1.5, 10, 64).tolist() == [10, 16, 64]
    assert max_lengths(torch.tensor([2]), 2.0, 0).tolist() == [4]
