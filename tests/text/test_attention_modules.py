"""dlkit.nets.attention: weights are distributions, masks are respected, cached and direct paths agree."""

from __future__ import annotations

import pytest
import torch

from dlkit.nets.attention import AdditiveAttention, LuongAttention, MultiHeadAttention

B, S, D = 3, 6, 8


@pytest.fixture
def data():
    g = torch.Generator().manual_seed(0)
    q, keys = torch.randn(B, D, generator=g), torch.randn(B, S, D, generator=g)
    mask = torch.arange(S)[None] < torch.tensor([6, 3, 1])[:, None]
    return q, keys, mask


@pytest.mark.parametrize("make", [lambda: AdditiveAttention(D, D, 5), lambda: LuongAttention(D, "dot"),
                                  lambda: LuongAttention(D, "general"), lambda: LuongAttention(D, "general", scale=True)])
@torch.no_grad()
def test_single_query_attention(make, data):
    torch.manual_seed(0)
    attn = make()
    q, keys, mask = data
    ctx, w = attn(q, keys, mask)
    assert ctx.shape == (B, D) and w.shape == (B, S)
    assert torch.allclose(w.sum(-1), torch.ones(B), atol=1e-6)
    assert (w[~mask] == 0).all() and w[2, 0] == pytest.approx(1.0)
    assert torch.allclose(ctx, (w[:, :, None] * keys).sum(1), atol=1e-6)
    ctx2, w2 = attn(q, keys, mask, projected=attn.project_keys(keys))  # the decoder's cached path
    assert torch.equal(w, w2) and torch.equal(ctx, ctx2)
    changed = keys.clone()
    changed[~mask] = 100.0  # what is masked out cannot matter
    assert torch.allclose(attn(q, changed, mask)[0], ctx, atol=1e-6)
    _, w_all = attn(q, keys, None)
    assert torch.allclose(w_all.sum(-1), torch.ones(B), atol=1e-6) and (w_all > 0).all()
    _, w_none = attn(q, keys, torch.zeros(B, S, dtype=torch.bool))  # nothing valid: uniform, never NaN
    assert torch.isfinite(w_none).all()


def test_luong_kind_is_checked():
    with pytest.raises(ValueError):
        LuongAttention(D, "concat")


@torch.no_grad()
def test_multi_head_attention_paths_agree_and_respect_masks(data):
    torch.manual_seed(0)
    mha = MultiHeadAttention(D, heads=2).eval()
    g = torch.Generator().manual_seed(1)
    x, mem = torch.randn(B, 4, D, generator=g), torch.randn(B, S, D, generator=g)
    _, _, mask = data
    fused, none = mha.attend(x, mem, mask)
    explicit, w = mha.attend(x, mem, mask, need_weights=True)
    assert none is None and torch.allclose(fused, explicit, atol=1e-5)
    assert w.shape == (B, 4, S) and torch.allclose(w.sum(-1), torch.ones(B, 4), atol=1e-5)
    assert (w.transpose(1, 2)[~mask] == 0).all()
    k, v = mha.project_kv(x)
    causal, _ = mha(x, k, v, causal=True)
    causal_w, cw = mha(x, k, v, causal=True, need_weights=True)
    assert torch.allclose(causal, causal_w, atol=1e-5) and (cw.triu(1) == 0).all()
    with pytest.raises(ValueError):
        MultiHeadAttention(10, heads=3)
