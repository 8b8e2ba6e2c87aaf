"""A GPT-style decoder-only Transformer (Radford et al. 2018/2019; nanoGPT's layout).

Pre-LayerNorm blocks, causal self-attention through ``scaled_dot_product_attention`` (flash kernels on
GPUs), a GELU MLP, dropout, learned absolute positions and a language-model head tied to the token
embedding. ``forward`` takes an optional KV cache so sampling costs O(T) per new token instead of O(T^2).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass
class GPTConfig:
    vocab_size: int = 65
    block_size: int = 256  # context window
    n_layer: int = 6
    n_head: int = 6
    n_embd: int = 384
    dropout: float = 0.2
    bias: bool = False


PRESETS: dict[str, GPTConfig] = {
    # for tests: trains in seconds
    "tiny": GPTConfig(block_size=32, n_layer=2, n_head=2, n_embd=32, dropout=0.0),
    # nanoGPT's CPU configuration (4 layers, 4 heads, d=128, context 64)
    "small": GPTConfig(block_size=64, n_layer=4, n_head=4, n_embd=128, dropout=0.0),
    # between small and large: what a laptop CPU can train on Tiny Shakespeare in about an hour
    "medium": GPTConfig(block_size=128, n_layer=4, n_head=4, n_embd=256, dropout=0.1),
    # nanoGPT's shakespeare_char "baby GPT" (10.7M parameters)
    "large": GPTConfig(block_size=256, n_layer=6, n_head=6, n_embd=384, dropout=0.2),
}
# Earlier names of presets: training states saved under them still resume.
RENAMED_PRESETS = {"baby": "large"}


def preset(name: str, **overrides) -> GPTConfig:
    name = RENAMED_PRESETS.get(name, name)
    if name not in PRESETS:
        raise KeyError(name)
    return replace(PRESETS[name], **{k: v for k, v in overrides.items() if v is not None})


KVCache = list  # one (k, v) pair per layer, each (B, nh, T, hs)


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        if cfg.n_head < 1 or cfg.n_embd % cfg.n_head:
            raise ValueError(f"n_embd {cfg.n_embd} is not a multiple of n_head {cfg.n_head}")
        self.n_head = cfg.n_head
        self.qkv = nn.Linear(cfg.n_embd, 3 * cfg.n_embd, bias=cfg.bias)
        self.proj = nn.Linear(cfg.n_embd, cfg.n_embd, bias=cfg.bias)
        self.dropout = cfg.dropout
        self.resid_drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, cache: tuple | None = None):
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)
        # (B, T, C) -> (B, nh, T, hs)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        if cache is not None and cache[0] is not None:
            k = torch.cat([cache[0], k], dim=2)
            v = torch.cat([cache[1], v], dim=2)
        # With a cache, a single new query attends to every cached key: no mask needed.
        # Prefill (T > 1) always starts from an empty cache, so it is plain causal attention.
        causal = T > 1
        y = F.scaled_dot_product_attention(
            q, k, v, is_causal=causal, dropout_p=self.dropout if self.training else 0.0
        )  # (B, nh, T, hs)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_drop(self.proj(y)), (k, v)


class MLP(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.fc = nn.Linear(cfg.n_embd, 4 * cfg.n_embd, bias=cfg.bias)
        self.proj = nn.Linear(4 * cfg.n_embd, cfg.n_embd, bias=cfg.bias)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x):
        return self.drop(self.proj(F.gelu(self.fc(x))))


class Block(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.ln1 = nn.LayerNorm(cfg.n_embd, bias=cfg.bias)
        self.attn = CausalSelfAttention(cfg)
        self.ln2 = nn.LayerNorm(cfg.n_embd, bias=cfg.bias)
        self.mlp = MLP(cfg)

    def forward(self, x, cache=None):
        a, new_cache = self.attn(self.ln1(x), cache)
        x = x + a
        x = x + self.mlp(self.ln2(x))
        return x, new_cache


class GPT(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.cfg = cfg
        self.wte = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        self.wpe = nn.Embedding(cfg.block_size, cfg.n_embd)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.n_embd, bias=cfg.bias)
        self.lm_head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        self.lm_head.weight = self.wte.weight  # weight tying (Press & Wolf 2017)
        self.apply(self._init_weights)
        # GPT-2: scale the residual projections by 1/sqrt(2 * n_layer)
        for name, p in self.named_parameters():
            if name.endswith("proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * cfg.n_layer))

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, mean=0.0, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, mean=0.0, std=0.02)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None):
        """idx (B, T) -> logits (B, T, V); with targets also the mean cross-entropy."""
        x = self._embed(idx, 0)
        for block in self.blocks:
            x, _ = block(x)
        logits = self.lm_head(self.ln_f(x))  # (B, T, V)
        if targets is None:
            return logits
        loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1))
        return logits, loss

    def forward_cached(self, idx: torch.Tensor, cache: KVCache | None):
        """Logits for the last position only, and the grown cache. ``idx`` holds only the new tokens."""
        past = 0 if not cache else cache[0][0].size(2)
        x = self._embed(idx, past)
        cache = cache or [None] * len(self.blocks)
        new = []
        for block, c in zip(self.blocks, cache):
            x, kv = block(x, c)
            new.append(kv)
        logits = self.lm_head(self.ln_f(x[:, -1:, :]))  # (B, 1, V)
        return logits[:, -1, :], new

    def _embed(self, idx: torch.Tensor, offset: int) -> torch.Tensor:
        B, T = idx.shape
        if offset + T > self.cfg.block_size:
            raise ValueError(f"sequence of {offset + T} tokens exceeds the context of {self.cfg.block_size}")
        pos = torch.arange(offset, offset + T, device=idx.device)
        return self.drop(self.wte(idx) + self.wpe(pos))  # (B, T, C)


def build_model(cfg: GPTConfig) -> GPT:
    return GPT(cfg)
