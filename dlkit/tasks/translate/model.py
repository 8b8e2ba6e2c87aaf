"""Sequence-to-sequence translation models: ``lstm``, ``lstm-attention`` and ``transformer``.

All three share one small interface that training and decoding use:

* ``forward(src, tgt_in) -> logits (B, T, V)`` with teacher forcing;
* ``encode(src) -> enc`` and ``step(enc, state, y) -> (logits (B, V), state, attn (B, S) | None)`` for
  incremental decoding. ``enc`` and ``state`` are dicts of batch-first tensors, so beam search reorders or
  expands them with ``index_select(0, ...)`` without knowing the architecture.

Token ids come from :mod:`dlkit.text.tokens`; attention modules from :mod:`dlkit.nets.attention`; decoding
is :mod:`dlkit.text.search`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
import torch.nn as nn

from dlkit.nets.attention import AdditiveAttention, LuongAttention, MultiHeadAttention
from dlkit.text.tokens import BOS, EOS, PAD, UNK  # noqa: F401 (re-exported for the task's modules)
ARCHS = ("lstm", "lstm-attention", "transformer")


@dataclass
class Seq2SeqConfig:
    arch: str = "transformer"
    src_vocab: int = 8000
    tgt_vocab: int = 8000
    d_model: int = 256  # embedding / hidden size
    enc_layers: int = 3
    dec_layers: int = 3
    heads: int = 4  # transformer only
    ff: int = 1024  # transformer only
    dropout: float = 0.1
    max_len: int = 256  # longest source/target in subwords (transformer positions; truncation limit)
    share_embeddings: bool = True  # joint vocabulary: one matrix for source, target and output (Press & Wolf 2017)
    attention: str = "luong"  # lstm-attention: luong (scaled general) | bahdanau (additive)
    reverse_source: bool = True  # lstm: Sutskever et al. 2014 feed the source backwards


PRESETS: dict[str, dict[str, dict]] = {
    "transformer": {
        "tiny": dict(d_model=32, enc_layers=1, dec_layers=1, heads=2, ff=64, dropout=0.0),
        "small": dict(d_model=256, enc_layers=3, dec_layers=3, heads=4, ff=512, dropout=0.1),
        "base": dict(d_model=512, enc_layers=6, dec_layers=6, heads=8, ff=2048, dropout=0.1),
    },
    "lstm-attention": {
        "tiny": dict(d_model=32, enc_layers=1, dec_layers=1, dropout=0.0),
        "small": dict(d_model=256, enc_layers=2, dec_layers=2, dropout=0.2),
        "base": dict(d_model=512, enc_layers=2, dec_layers=4, dropout=0.2),
    },
    "lstm": {
        "tiny": dict(d_model=32, enc_layers=1, dec_layers=1, dropout=0.0),
        "small": dict(d_model=256, enc_layers=2, dec_layers=2, dropout=0.2),
        "base": dict(d_model=1000, enc_layers=4, dec_layers=4, dropout=0.2),  # Sutskever et al.'s 4x1000
    },
}


def preset(arch: str, name: str, **overrides) -> Seq2SeqConfig:
    """The named size of an architecture; ``None`` overrides are ignored. KeyError for unknown names."""
    cfg = Seq2SeqConfig(arch=arch, **PRESETS[arch][name])
    return replace(cfg, **{k: v for k, v in overrides.items() if v is not None})


def build_model(cfg: Seq2SeqConfig) -> nn.Module:
    if cfg.arch == "transformer":
        return Transformer(cfg)
    if cfg.arch == "lstm-attention":
        return AttentionLSTM(cfg)
    if cfg.arch == "lstm":
        return PlainLSTM(cfg)
    raise KeyError(cfg.arch)


# ============================================================== Transformer (Vaswani et al. 2017, pre-LN)
def sinusoids(length: int, dim: int) -> torch.Tensor:
    pos = torch.arange(length).float()[:, None]
    inv = torch.exp(torch.arange(0, dim, 2).float() * (-math.log(10000.0) / dim))
    pe = torch.zeros(length, dim)
    pe[:, 0::2] = torch.sin(pos * inv)
    pe[:, 1::2] = torch.cos(pos * inv[: dim // 2])
    return pe


class EncoderLayer(nn.Module):
    def __init__(self, cfg: Seq2SeqConfig):
        super().__init__()
        d = cfg.d_model
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.att = MultiHeadAttention(d, cfg.heads, cfg.dropout)
        self.ff = nn.Sequential(nn.Linear(d, cfg.ff), nn.ReLU(), nn.Dropout(cfg.dropout), nn.Linear(cfg.ff, d))
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x, mask):
        h = self.ln1(x)
        k, v = self.att.project_kv(h)
        x = x + self.drop(self.att(h, k, v, mask)[0])
        return x + self.drop(self.ff(self.ln2(x)))


class DecoderLayer(nn.Module):
    def __init__(self, cfg: Seq2SeqConfig):
        super().__init__()
        d = cfg.d_model
        self.ln1, self.ln2, self.ln3 = nn.LayerNorm(d), nn.LayerNorm(d), nn.LayerNorm(d)
        self.self_att = MultiHeadAttention(d, cfg.heads, cfg.dropout)
        self.cross_att = MultiHeadAttention(d, cfg.heads, cfg.dropout)
        self.ff = nn.Sequential(nn.Linear(d, cfg.ff), nn.ReLU(), nn.Dropout(cfg.dropout), nn.Linear(cfg.ff, d))
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x, mem_k, mem_v, mem_mask, cache=None, need_weights=False):
        """x (B, T, C). With ``cache`` = (k, v) of earlier positions, x is the newest position only."""
        h = self.ln1(x)
        k, v = self.self_att.project_kv(h)
        if cache is not None:
            k, v = torch.cat([cache[0], k], 2), torch.cat([cache[1], v], 2)
        x = x + self.drop(self.self_att(h, k, v, causal=cache is None)[0])
        y, w = self.cross_att(self.ln2(x), mem_k, mem_v, mem_mask, need_weights=need_weights)
        x = x + self.drop(y)
        return x + self.drop(self.ff(self.ln3(x))), (k, v), w


class Transformer(nn.Module):
    """Encoder-decoder Transformer, pre-LN (Xiong et al. 2020) for stable training without long warmup."""

    def __init__(self, cfg: Seq2SeqConfig):
        super().__init__()
        self.cfg = cfg
        d = cfg.d_model
        self.src_emb = nn.Embedding(cfg.src_vocab, d, padding_idx=PAD)
        self.tgt_emb = self.src_emb if cfg.share_embeddings else nn.Embedding(cfg.tgt_vocab, d, padding_idx=PAD)
        self.register_buffer("pos", sinusoids(cfg.max_len + 2, d), persistent=False)
        self.enc = nn.ModuleList(EncoderLayer(cfg) for _ in range(cfg.enc_layers))
        self.dec = nn.ModuleList(DecoderLayer(cfg) for _ in range(cfg.dec_layers))
        self.enc_ln, self.dec_ln = nn.LayerNorm(d), nn.LayerNorm(d)
        self.drop = nn.Dropout(cfg.dropout)
        self.out = nn.Linear(d, cfg.tgt_vocab, bias=False)
        self.out.weight = self.tgt_emb.weight  # tied output projection
        nn.init.normal_(self.src_emb.weight, std=d**-0.5)
        if self.tgt_emb is not self.src_emb:
            nn.init.normal_(self.tgt_emb.weight, std=d**-0.5)

    def embed(self, emb, ids, offset=0):
        T = ids.size(1)
        return self.drop(emb(ids) * math.sqrt(self.cfg.d_model) + self.pos[offset : offset + T])

    def encode(self, src):
        mask = (src != PAD)[:, None, None, :]  # (B, 1, 1, S)
        x = self.embed(self.src_emb, src)
        for layer in self.enc:
            x = layer(x, mask)
        mem = self.enc_ln(x)  # (B, S, C)
        enc = {"mask": mask}
        for i, layer in enumerate(self.dec):  # cross-attention keys/values, computed once per sentence
            enc[f"k{i}"], enc[f"v{i}"] = layer.cross_att.project_kv(mem)
        return enc

    def forward(self, src, tgt_in):
        enc = self.encode(src)
        x = self.embed(self.tgt_emb, tgt_in)
        for i, layer in enumerate(self.dec):
            x, _, _ = layer(x, enc[f"k{i}"], enc[f"v{i}"], enc["mask"])
        return self.out(self.dec_ln(x))  # (B, T, V)

    def init_state(self, enc):
        B = enc["mask"].size(0)
        return {"t": torch.zeros(B, dtype=torch.long, device=enc["mask"].device)}

    def step(self, enc, state, y, need_weights=False):
        """One decoding step with a key/value cache of the decoder self-attention."""
        t = int(state["t"][0])
        x = self.embed(self.tgt_emb, y[:, None], offset=t)  # (B, 1, C)
        new, w = {"t": state["t"] + 1}, None
        for i, layer in enumerate(self.dec):
            cache = (state[f"sk{i}"], state[f"sv{i}"]) if t > 0 else None
            x, (k, v), w = layer(x, enc[f"k{i}"], enc[f"v{i}"], enc["mask"], cache, need_weights=need_weights)
            new[f"sk{i}"], new[f"sv{i}"] = k, v
        logits = self.out(self.dec_ln(x))[:, 0]
        return logits, new, (w[:, 0] if w is not None else None)


# ============================================================== LSTMs
def _lengths(src):
    return (src != PAD).sum(1).clamp(min=1)


def reverse_padded(src):
    """Reverse each row's non-pad prefix in place of itself (Sutskever et al. 2014's source reversal)."""
    B, S = src.shape
    lens = _lengths(src)
    idx = torch.arange(S, device=src.device)[None].expand(B, S)
    rev = (lens[:, None] - 1 - idx).clamp(min=0)
    rev = torch.where(idx < lens[:, None], rev, idx)
    return src.gather(1, rev)


class PlainLSTM(nn.Module):
    """Sutskever et al. 2014: a deep LSTM reads the (reversed) source; its final state starts the decoder."""

    def __init__(self, cfg: Seq2SeqConfig):
        super().__init__()
        self.cfg = cfg
        d, L = cfg.d_model, cfg.enc_layers
        if cfg.dec_layers != L:
            raise ValueError("lstm: the decoder starts from the encoder's state, so enc_layers must equal dec_layers")
        self.src_emb = nn.Embedding(cfg.src_vocab, d, padding_idx=PAD)
        self.tgt_emb = self.src_emb if cfg.share_embeddings else nn.Embedding(cfg.tgt_vocab, d, padding_idx=PAD)
        drop = cfg.dropout if L > 1 else 0.0
        self.encoder = nn.LSTM(d, d, L, batch_first=True, dropout=drop)
        self.decoder = nn.LSTM(d, d, L, batch_first=True, dropout=drop)
        self.drop = nn.Dropout(cfg.dropout)
        self.out = nn.Linear(d, cfg.tgt_vocab)
        for name, p in self.named_parameters():  # Sutskever et al.: uniform(-0.08, 0.08)
            if "lstm" in name or "coder" in name:
                nn.init.uniform_(p, -0.08, 0.08)

    def encode(self, src):
        if self.cfg.reverse_source:
            src = reverse_padded(src)
        x = self.drop(self.src_emb(src))
        packed = nn.utils.rnn.pack_padded_sequence(x, _lengths(src).cpu(), batch_first=True, enforce_sorted=False)
        _, (h, c) = self.encoder(packed)  # (L, B, C) each
        return {"h": h.transpose(0, 1), "c": c.transpose(0, 1)}

    def init_state(self, enc):
        return {"h": enc["h"], "c": enc["c"]}

    def forward(self, src, tgt_in):
        enc = self.encode(src)
        hc = (enc["h"].transpose(0, 1).contiguous(), enc["c"].transpose(0, 1).contiguous())
        y, _ = self.decoder(self.drop(self.tgt_emb(tgt_in)), hc)
        return self.out(self.drop(y))  # (B, T, V)

    def step(self, enc, state, y, need_weights=False):
        hc = (state["h"].transpose(0, 1).contiguous(), state["c"].transpose(0, 1).contiguous())
        out, (h, c) = self.decoder(self.tgt_emb(y)[:, None], hc)
        return self.out(out[:, 0]), {"h": h.transpose(0, 1), "c": c.transpose(0, 1)}, None


class AttentionLSTM(nn.Module):
    """tensorflow/nmt's standard model: bi-LSTM encoder, attention, input feeding (Luong et al. 2015)."""

    def __init__(self, cfg: Seq2SeqConfig):
        super().__init__()
        self.cfg = cfg
        d = cfg.d_model
        self.src_emb = nn.Embedding(cfg.src_vocab, d, padding_idx=PAD)
        self.tgt_emb = self.src_emb if cfg.share_embeddings else nn.Embedding(cfg.tgt_vocab, d, padding_idx=PAD)
        drop = cfg.dropout if cfg.enc_layers > 1 else 0.0
        self.encoder = nn.LSTM(d, d // 2, cfg.enc_layers, batch_first=True, bidirectional=True, dropout=drop)
        # input feeding: the previous attentional vector joins the embedding at each decoder input
        self.cells = nn.ModuleList(nn.LSTMCell(2 * d if i == 0 else d, d) for i in range(cfg.dec_layers))
        self.bridge = nn.Linear(d, 2 * d * cfg.dec_layers)  # encoder summary -> initial (h, c) of each layer
        if cfg.attention == "luong":  # Luong et al.'s general score, scaled by 1/sqrt(C) (tensorflow/nmt)
            self.attn = LuongAttention(d, "general", scale=True)
        elif cfg.attention == "bahdanau":  # Bahdanau et al.'s additive score v^T tanh(W h_t + U h_s)
            self.attn = AdditiveAttention(d, d, d)
        else:
            raise ValueError(f"attention must be luong or bahdanau, not {cfg.attention!r}")
        self.combine = nn.Linear(2 * d, d, bias=False)  # h~_t = tanh(W_c [c_t; h_t])
        self.drop = nn.Dropout(cfg.dropout)
        self.out = nn.Linear(d, cfg.tgt_vocab)

    def encode(self, src):
        lens = _lengths(src)
        x = self.drop(self.src_emb(src))
        packed = nn.utils.rnn.pack_padded_sequence(x, lens.cpu(), batch_first=True, enforce_sorted=False)
        out, _ = self.encoder(packed)
        mem, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=src.size(1))  # (B, S, C)
        mask = src != PAD
        summary = (mem * mask[:, :, None]).sum(1) / lens[:, None]  # (B, C) mean over the source
        return {"mem": mem, "keys": self.attn.project_keys(mem), "mask": mask, "summary": summary}

    def init_state(self, enc):
        B, d, L = enc["mem"].size(0), self.cfg.d_model, self.cfg.dec_layers
        hc = torch.tanh(self.bridge(enc["summary"])).view(B, L, 2, d)
        return {"h": hc[:, :, 0], "c": hc[:, :, 1], "feed": enc["mem"].new_zeros(B, d)}

    def step(self, enc, state, y, need_weights=False):
        x = torch.cat([self.drop(self.tgt_emb(y)), state["feed"]], -1)  # (B, 2C)
        hs, cs = [], []
        for i, cell in enumerate(self.cells):
            h, c = cell(x, (state["h"][:, i], state["c"][:, i]))
            hs.append(h)
            cs.append(c)
            x = self.drop(h) if i + 1 < len(self.cells) else h
        ctx, w = self.attn(x, enc["mem"], enc["mask"], projected=enc["keys"])
        feed = torch.tanh(self.combine(torch.cat([ctx, x], -1)))  # (B, C)
        logits = self.out(self.drop(feed))
        return logits, {"h": torch.stack(hs, 1), "c": torch.stack(cs, 1), "feed": feed}, w

    def forward(self, src, tgt_in):
        enc = self.encode(src)
        state = self.init_state(enc)
        logits = []
        for t in range(tgt_in.size(1)):  # input feeding makes the decoder sequential
            lg, state, _ = self.step(enc, state, tgt_in[:, t])
            logits.append(lg)
        return torch.stack(logits, 1)  # (B, T, V)
