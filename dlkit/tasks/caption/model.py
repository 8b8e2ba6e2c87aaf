"""Caption decoders over a CNN feature map, with the step interface of :mod:`dlkit.text.search`.

* ``nic``: Show and Tell (Vinyals et al., CVPR 2015): the mean-pooled image feature, projected to the word
  embedding size, is the LSTM's first input (x_{-1} = W_I CNN(I)); words follow (x_t = W_e S_t).
* ``attention``: Show, Attend and Tell with soft attention (Xu et al., ICML 2015): at each step an additive
  attention over the L = H*W feature vectors gives a context z_t, gated by beta_t = sigmoid(f_beta(h_{t-1}))
  (their Sec. 4.2.1); the LSTM reads [E y_{t-1}; z_t]; the initial state comes from MLPs of the mean feature
  (their Sec. 3.1.2); the "deep output" p(y_t) = softmax(L_o(E y_{t-1} + L_h h_t + L_z z_t)) (their eq. 7).
  Training adds the doubly stochastic regularisation lambda * sum_i (1 - sum_t alpha_ti)^2 (their eq. 14).

A decoder takes encoder features (B, L, C) (``prepare``), then ``init_state(enc)`` and ``step(enc, state, y)``.
Model files are pure: no I/O, no device choice.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn as nn
import torch.nn.functional as F

from dlkit.text.tokens import PAD

ARCHS = ("nic", "attention")


@dataclass
class CaptionConfig:
    arch: str = "attention"  # nic | attention
    vocab_size: int = 1000
    feat_dim: int = 1280  # encoder channels C
    embed: int = 256
    hidden: int = 512
    attn_dim: int = 256
    proj: int = 512  # attention: encoder features are projected to this size first (Linear + ReLU)
    dropout: float = 0.5
    max_len: int = 25  # longest caption in words (training truncates, decoding stops here)


PRESETS = {
    "small": dict(embed=256, hidden=512, attn_dim=256, proj=512),
    "tiny": dict(embed=32, hidden=64, attn_dim=32, proj=32, dropout=0.1),
}


def preset(name: str, **overrides) -> CaptionConfig:
    base = replace(CaptionConfig(), **PRESETS[name])
    return replace(base, **{k: v for k, v in overrides.items() if v is not None})


class NIC(nn.Module):
    """Show and Tell: one LSTM; the image embedding is its first input, then the words."""

    def __init__(self, cfg: CaptionConfig):
        super().__init__()
        self.cfg = cfg
        self.img = nn.Linear(cfg.feat_dim, cfg.embed)
        self.embed = nn.Embedding(cfg.vocab_size, cfg.embed, padding_idx=PAD)
        self.lstm = nn.LSTM(cfg.embed, cfg.hidden, batch_first=True)
        self.drop = nn.Dropout(cfg.dropout)
        self.out = nn.Linear(cfg.hidden, cfg.vocab_size)

    def prepare(self, feats: torch.Tensor) -> dict:
        """(B, L, C) or pooled (B, C) features -> ``enc``."""
        pooled = feats.mean(1) if feats.dim() == 3 else feats  # (B, C)
        return {"img": self.drop(self.img(pooled))}  # (B, E)

    def init_state(self, enc: dict) -> dict:
        _, (h, c) = self.lstm(enc["img"][:, None])  # x_{-1}: the image, from a zero state
        return {"h": h[0], "c": c[0]}  # (B, H) each

    def step(self, enc: dict, state: dict, y: torch.Tensor, need_weights: bool = False):
        e = self.drop(self.embed(y))[:, None]  # (B, 1, E)
        o, (h, c) = self.lstm(e, (state["h"][None].contiguous(), state["c"][None].contiguous()))
        return self.out(self.drop(o[:, 0])), {"h": h[0], "c": c[0]}, None

    def forward(self, feats: torch.Tensor, x: torch.Tensor):
        """Teacher forcing: ``x`` (B, T) = BOS w1..wn -> logits (B, T, V); no attention weights."""
        enc = self.prepare(feats)
        seq = torch.cat([enc["img"][:, None], self.drop(self.embed(x))], 1)  # (B, 1+T, E)
        o, _ = self.lstm(seq)
        return self.out(self.drop(o[:, 1:])), None  # (B, T, V)


class SoftAttentionDecoder(nn.Module):
    """Show, Attend and Tell (soft attention, deterministic)."""

    def __init__(self, cfg: CaptionConfig):
        super().__init__()
        from dlkit.nets.attention import AdditiveAttention

        self.cfg = cfg
        D = cfg.proj or cfg.feat_dim
        self.proj = nn.Sequential(nn.Linear(cfg.feat_dim, D), nn.ReLU()) if cfg.proj else nn.Identity()
        self.attn = AdditiveAttention(cfg.hidden, D, cfg.attn_dim)
        self.init_h = nn.Linear(D, cfg.hidden)
        self.init_c = nn.Linear(D, cfg.hidden)
        self.f_beta = nn.Linear(cfg.hidden, D)
        self.embed = nn.Embedding(cfg.vocab_size, cfg.embed, padding_idx=PAD)
        self.cell = nn.LSTMCell(cfg.embed + D, cfg.hidden)
        self.L_h = nn.Linear(cfg.hidden, cfg.embed)
        self.L_z = nn.Linear(D, cfg.embed)
        self.out = nn.Linear(cfg.embed, cfg.vocab_size)  # L_o
        self.drop = nn.Dropout(cfg.dropout)

    def prepare(self, feats: torch.Tensor) -> dict:
        if feats.dim() != 3:
            raise ValueError("the attention decoder needs a feature map (B, L, C), not pooled features")
        a = self.proj(feats)  # (B, L, D)
        return {"feats": a, "keys": self.attn.project_keys(a), "mean": a.mean(1)}  # keys (B, L, A): once per image

    def init_state(self, enc: dict) -> dict:
        m = enc["mean"]
        return {"h": torch.tanh(self.init_h(m)), "c": torch.tanh(self.init_c(m))}

    def step(self, enc: dict, state: dict, y: torch.Tensor, need_weights: bool = False):
        ctx, alpha = self.attn(state["h"], enc["feats"], projected=enc["keys"])  # (B, D), (B, L)
        ctx = torch.sigmoid(self.f_beta(state["h"])) * ctx  # the gating scalar beta_t, per channel
        e = self.embed(y)  # (B, E)
        h, c = self.cell(torch.cat([self.drop(e), ctx], 1), (state["h"], state["c"]))
        logits = self.out(self.drop(e + self.L_h(h) + self.L_z(ctx)))  # deep output (eq. 7)
        return logits, {"h": h, "c": c}, alpha

    def forward(self, feats: torch.Tensor, x: torch.Tensor):
        """Teacher forcing: logits (B, T, V) and the attention weights (B, T, L); zeros where ``x`` is PAD.

        Rows run longest first and step t computes only the rows still inside their caption (as in Xu et al.'s
        and most later code): a batch's padding costs nothing, about a third of the steps on Flickr8k."""
        B, T = x.shape
        lengths = (x != PAD).sum(1)  # (B,): BOS + words, the steps whose outputs are scored
        order = lengths.argsort(descending=True)
        active = (lengths[order][None, :] > torch.arange(T, device=x.device)[:, None]).sum(1).tolist()  # (T,)
        enc = self.prepare(feats[order])
        state = self.init_state(enc)
        x = x[order]
        logits, alphas = [], []
        for t, b in enumerate(active):
            if b == 0:
                break
            sub = {k: v[:b] for k, v in enc.items()}
            lg, state, a = self.step(sub, {k: v[:b] for k, v in state.items()}, x[:b, t])
            logits.append(F.pad(lg, (0, 0, 0, B - b)))  # (B, V): rows past their end are zeros
            alphas.append(F.pad(a, (0, 0, 0, B - b)))
        pad = T - len(logits)
        logits = F.pad(torch.stack(logits, 1), (0, 0, 0, pad))  # (B, T, V), sorted rows
        alphas = F.pad(torch.stack(alphas, 1), (0, 0, 0, pad))  # (B, T, L)
        inverse = order.argsort()
        return logits[inverse], alphas[inverse]


def build_model(cfg: CaptionConfig) -> nn.Module:
    if cfg.arch == "nic":
        return NIC(cfg)
    if cfg.arch == "attention":
        return SoftAttentionDecoder(cfg)
    raise ValueError(f"unknown caption architecture '{cfg.arch}' (expected {', '.join(ARCHS)})")


def caption_loss(logits: torch.Tensor, y: torch.Tensor, alphas: torch.Tensor | None,
                 alpha_c: float = 1.0, label_smoothing: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Token cross-entropy (PAD ignored; ``label_smoothing`` as Szegedy et al. 2016) plus, with attention,
    Xu et al.'s doubly stochastic penalty.

    Returns (total loss, cross-entropy alone)."""
    ce = F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), y.reshape(-1), ignore_index=PAD,
                         label_smoothing=label_smoothing)
    if alphas is None or alpha_c == 0:
        return ce, ce
    mask = (y != PAD).float()[:, :, None]  # (B, T, 1): padded steps attend nowhere
    coverage = (alphas.float() * mask).sum(1)  # (B, L): sum over t of alpha_ti
    return ce + alpha_c * ((1.0 - coverage) ** 2).mean(), ce
