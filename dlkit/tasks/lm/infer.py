"""Sampling from a GPT: temperature, top-k, nucleus (top-p), with or without the KV cache."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import torch
import torch.nn.functional as F

from dlkit.core.loader import load_model
from dlkit.core.config import config_from_dict
from dlkit.core.errors import DataError, ModelFileError
from dlkit.tasks.lm.data import _show, tokenizer_from_meta
from dlkit.tasks.lm.model import GPT, GPTConfig

TASK = "lm"


def build_from_meta(meta: dict) -> GPT:
    """The GPT a model file's metadata describes (its config checked field by field)."""
    return GPT(config_from_dict(GPTConfig, meta.get("config")))


def load_lm(spec, device="cpu") -> tuple[GPT, object, dict]:
    """Model (eval mode, fp32, on ``device``), tokenizer and metadata from a bundled name or an 'lm' file.

    The config is checked against the stored tensors before anything is built (core.loader.load_model)."""
    model, meta = load_model(spec, TASK, build_from_meta, device)
    try:
        tok = tokenizer_from_meta(meta["tokenizer"])
    except (KeyError, ValueError) as e:
        raise ModelFileError(f"'{meta['path']}' has no usable tokenizer in its metadata ({e})") from None
    if tok.vocab_size > model.cfg.vocab_size:
        raise ModelFileError(f"'{meta['path']}': its tokenizer has {tok.vocab_size} tokens, the model only "
                             f"{model.cfg.vocab_size}")
    return model, tok, meta


def filter_logits(logits: torch.Tensor, temperature: float, top_k: int | None, top_p: float | None) -> torch.Tensor:
    """(B, V) logits -> (B, V) probabilities after temperature, top-k and top-p (Holtzman et al. 2020).

    Temperature 0 is the limit: all mass on the most likely token (greedy decoding)."""
    if temperature == 0:
        return F.one_hot(logits.argmax(-1), logits.size(-1)).float()
    logits = logits.float() / temperature
    if top_k is not None and top_k < logits.size(-1):
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = F.softmax(logits, dim=-1)
    if top_p is not None and top_p < 1.0:
        sorted_p, order = torch.sort(probs, descending=True, dim=-1)
        cum = sorted_p.cumsum(-1)
        drop = cum - sorted_p > top_p  # keep the smallest prefix whose mass reaches top_p
        sorted_p = sorted_p.masked_fill(drop, 0.0)
        probs = torch.zeros_like(probs).scatter(-1, order, sorted_p)
        probs = probs / probs.sum(-1, keepdim=True)
    return probs


@torch.no_grad()
def generate(
    model: GPT, idx: torch.Tensor, max_new_tokens: int, temperature: float = 1.0, top_k: int | None = None,
    top_p: float | None = None, generator: torch.Generator | None = None, use_cache: bool = True,
) -> Iterator[torch.Tensor]:
    """Yield each new token (B,) for prompt ``idx`` (B, T).

    With the cache, each step feeds one token. When the context fills up, the window slides: the cache is
    rebuilt from the last half-context of tokens (absolute positions forbid simply dropping old entries).
    Without it, every step re-runs the whole cropped context, as nanoGPT's ``generate`` does."""
    block = model.cfg.block_size
    cache = None
    seq = idx
    for _ in range(max_new_tokens):
        if not use_cache:
            logits = model(seq[:, -block:])[:, -1, :]
        elif cache is None:
            logits, cache = model.forward_cached(seq[:, -block:], None)
        else:
            logits, cache = model.forward_cached(seq[:, -1:], cache)
        probs = filter_logits(logits, temperature, top_k, top_p)
        nxt = torch.multinomial(probs, 1, generator=generator)  # (B, 1)
        seq = torch.cat([seq, nxt], dim=1)
        if cache is not None and cache[0][0].size(2) >= block:
            keep = seq[:, -max(2, block // 2) :]
            _, cache = model.forward_cached(keep[:, :-1], None)  # the next step feeds keep[:, -1]
        yield nxt[:, 0]


def prompt_ids(tokenizer, prompt: str) -> list[int]:
    ids = tokenizer.encode(prompt).tolist() if prompt else []
    if not ids:  # start from a newline when there is no prompt, as nanoGPT's sample.py does
        nl = tokenizer.encode("\n").tolist() if not tokenizer.unknown("\n") else [0]
        ids = nl[-1:]
    return ids


def sample_text(model: GPT, tokenizer, prompt: str, n: int, device, seed: int = 0, temperature: float = 0.8,
                top_k: int | None = 200) -> str:
    """A short sample as one string (used at evaluation time during training)."""
    was_training = model.training
    model.eval()
    ids = torch.tensor([prompt_ids(tokenizer, prompt)], device=device)
    g = torch.Generator(device=device).manual_seed(seed)
    out = [int(t) for t in generate(model, ids, n, temperature, top_k, None, g)]
    model.train(was_training)
    return tokenizer.decode(out)


@dataclass
class SampleConfig:
    """What ``lm-sample`` draws: from model ``model`` (bundled name or path), ``num_samples`` continuations of
    ``prompt``, ``max_new_tokens`` each, with temperature / top-k / top-p; the same seed, the same text."""

    model: str = "shakespeare-char"
    prompt: str = ""
    max_new_tokens: int = 500
    temperature: float = 0.8
    top_k: int | None = 200
    top_p: float | None = None
    num_samples: int = 1
    seed: int = 0
    use_cache: bool = True


def stream_samples(cfg: SampleConfig, rt, on_text=None):
    """Yield one record per sample on runtime ``rt`` (device, precision).

    ``on_text(str)`` receives the text piece by piece as it is generated; when it returns False (stdout
    was closed, see dlkit.core.io) generation stops: nothing else would read it."""
    import time

    model, tok, meta = load_lm(cfg.model, rt.device)
    prompt, seed = cfg.prompt, cfg.seed
    bad = tok.unknown(prompt)
    if bad:
        raise DataError(f"the prompt has characters model '{meta['name']}' does not know: {_show(bad)}")
    ids = prompt_ids(tok, prompt)
    if len(ids) > model.cfg.block_size:
        ids = ids[-model.cfg.block_size :]  # the model cannot see further back anyway
    g = torch.Generator(device=rt.device).manual_seed(seed)

    def emit(piece: str) -> bool:
        return on_text is None or on_text(piece) is not False

    for i in range(cfg.num_samples):
        if not emit(("" if i == 0 else "\n---\n") + prompt):
            return
        new: list[int] = []
        shown = ""
        t0 = time.perf_counter()
        with rt.autocast():
            for t in generate(model, torch.tensor([ids], device=rt.device), cfg.max_new_tokens, cfg.temperature,
                              cfg.top_k, cfg.top_p, g, cfg.use_cache):
                new.append(int(t))
                if on_text:
                    text = tok.decode(new)
                    if not text.endswith("\ufffd"):  # wait for the rest of a multi-byte character
                        if not emit(text[len(shown):]):
                            return
                        shown = text
        seconds = time.perf_counter() - t0
        text = tok.decode(new)
        if not emit(text[len(shown):] + ("\n" if i == cfg.num_samples - 1 else "")):
            return
        yield {"sample": i, "seed": seed, "prompt": prompt, "text": text, "new_tokens": len(new),
               "seconds": round(seconds, 4), "tokens_per_s": len(new) / max(seconds, 1e-9)}
