"""Attention modules shared by text decoders (translation, captioning).

Single-query attention (one decoder step attends over a memory) has one call for both kinds::

    context, weights = attn(query (B, Dq), keys (B, S, Dk), mask (B, S) bool True = valid | None)
    # context (B, Dk) = sum_s weights[:, s] * keys[:, s];  weights (B, S) sum to 1, 0 where mask is False

The memory is both keys and values (Bahdanau et al. 2015; Luong et al. 2015; Xu et al. 2015's soft
attention over image regions). Its projection does not depend on the query, so a decoder computes it once
with ``project_keys(keys)`` and passes it as ``projected=`` at every step.

:class:`MultiHeadAttention` (Vaswani et al. 2017) takes already-projected keys/values so a decoder can cache
them (``project_kv``) and uses PyTorch's fused ``scaled_dot_product_attention`` unless weights are asked for.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F


def masked_softmax(score: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Softmax over the last dim with masked-out positions (mask False) at exactly 0 weight.

    A row with no valid position gets uniform weights rather than NaN."""
    if mask is not None:
        score = score.masked_fill(~mask, torch.finfo(score.dtype).min)
    return score.softmax(-1)


class AdditiveAttention(nn.Module):
    """Bahdanau et al. 2015: score(q, k_s) = v^T tanh(W_q q + W_k k_s)."""

    def __init__(self, query_dim: int, key_dim: int, attn_dim: int):
        super().__init__()
        self.keys = nn.Linear(key_dim, attn_dim, bias=False)
        self.query = nn.Linear(query_dim, attn_dim, bias=False)
        self.v = nn.Linear(attn_dim, 1, bias=False)

    def project_keys(self, keys: torch.Tensor) -> torch.Tensor:
        return self.keys(keys)

    def forward(self, query, keys, mask=None, projected=None):
        pk = self.keys(keys) if projected is None else projected  # (B, S, A)
        score = self.v(torch.tanh(pk + self.query(query)[:, None]))[:, :, 0]  # (B, S)
        w = masked_softmax(score, mask)
        return (w[:, None] @ keys)[:, 0], w


class LuongAttention(nn.Module):
    """Luong et al. 2015: ``dot`` score q . k_s, or ``general`` q^T W k_s (query and key of size ``dim``).

    ``scale=True`` divides by sqrt(dim), as tensorflow/nmt's ``scaled_luong`` (what dlkit's LSTM translator uses).
    """

    def __init__(self, dim: int, kind: str = "dot", scale: bool = False):
        super().__init__()
        if kind not in ("dot", "general"):
            raise ValueError(f"Luong attention kind must be dot or general, not {kind!r}")
        self.kind, self.scale = kind, scale
        if kind == "general":
            self.keys = nn.Linear(dim, dim, bias=False)

    def project_keys(self, keys: torch.Tensor) -> torch.Tensor:
        return self.keys(keys) if self.kind == "general" else keys

    def forward(self, query, keys, mask=None, projected=None):
        pk = self.project_keys(keys) if projected is None else projected  # (B, S, D)
        score = (pk @ query[:, :, None])[:, :, 0]
        if self.scale:
            score = score / math.sqrt(query.size(-1))
        w = masked_softmax(score, mask)
        return (w[:, None] @ keys)[:, 0], w


class MultiHeadAttention(nn.Module):
    """Scaled dot-product attention with ``heads`` heads over model width ``d``.

    ``forward(x (B, T, d), k, v (B, h, S, d/h) from project_kv, mask (B, S) or (B, 1, 1, S) bool True = keep,
    causal, need_weights) -> (out (B, T, d), weights (B, T, S) averaged over heads, or None)``.
    """

    def __init__(self, d: int, heads: int, dropout: float = 0.0):
        super().__init__()
        if d % heads:
            raise ValueError(f"model width {d} is not divisible by {heads} heads")
        self.h, self.dk, self.dropout = heads, d // heads, dropout
        self.q = nn.Linear(d, d)
        self.kv = nn.Linear(d, 2 * d)
        self.o = nn.Linear(d, d)

    def split(self, x):  # (B, T, C) -> (B, h, T, dk)
        B, T, _ = x.shape
        return x.view(B, T, self.h, self.dk).transpose(1, 2)

    def project_kv(self, x):
        k, v = self.kv(x).chunk(2, dim=-1)
        return self.split(k), self.split(v)

    def forward(self, x, k, v, mask=None, causal=False, need_weights=False):
        if mask is not None and mask.dim() == 2:
            mask = mask[:, None, None, :]
        q = self.split(self.q(x))
        weights = None
        if need_weights:  # explicit softmax, for alignment plots
            att = q @ k.transpose(-2, -1) / math.sqrt(self.dk)
            if causal and mask is None:
                T, S = att.shape[-2:]
                mask = torch.ones(T, S, dtype=torch.bool, device=att.device).tril(S - T)
            if mask is not None:
                att = att.masked_fill(~mask, float("-inf"))
            weights = att.softmax(-1)
            y = weights @ v
            weights = weights.mean(1)  # (B, T, S) averaged over heads
        else:
            drop = self.dropout if self.training else 0.0
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=drop, is_causal=causal and mask is None)
        B, _, T, _ = y.shape
        return self.o(y.transpose(1, 2).reshape(B, T, -1)), weights

    def attend(self, x, memory, mask=None, need_weights=False):
        """Convenience: ``x`` (B, T, d) attends over ``memory`` (B, S, d) (projects the memory itself)."""
        k, v = self.project_kv(memory)
        return self(x, k, v, mask, need_weights=need_weights)
