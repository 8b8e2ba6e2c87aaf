"""``--pretrain-text FILE``: train the decoder as a caption language model on sentences alone first.

The image input is a zero feature vector ("no image"), so the LSTM, the word embeddings and the output
layer learn how captions are written; the image-caption epochs then teach it to look. Words outside the
caption vocabulary become <unk> (the vocabulary still comes from the training captions only).
"""

from __future__ import annotations

from pathlib import Path

import torch

from dlkit.core.errors import DataError
from dlkit.core.io import read_text
from dlkit.core.optim import check_finite, optimizer_step
from dlkit.tasks.caption.vocab import Vocab, pad_batch
from dlkit.tasks.caption.model import caption_loss
from dlkit.text.tokens import UNK


def read_sentences(path: str | Path, limit: int = 2_000_000) -> list[str]:
    """One sentence per line, plain or gzip UTF-8 text (strict: latin-1 would become broken words that are
    then dropped without a word), at most TEXT_LIMIT bytes decompressed; empty lines skipped."""
    text = read_text(path, "--pretrain-text")
    lines = [ln.strip() for ln in text.splitlines()]
    lines = [ln for ln in lines if ln][:limit]
    if not lines:
        raise DataError(f"--pretrain-text '{path}' holds no sentences")
    return lines


def pretrain_text(decoder, vocab: Vocab, null_input: torch.Tensor, cfg, rt, report) -> dict:
    """``cfg.pretrain_epochs`` epochs of language modelling; returns the last epoch's mean loss."""
    lines = read_sentences(cfg.pretrain_text)
    sents = [vocab.encode(s, cfg.max_len) for s in lines]
    sents = [s for s in sents if s and sum(t == UNK for t in s) <= len(s) // 3]  # mostly known words
    if len(sents) < cfg.pretrain_batch_size:
        raise DataError(f"--pretrain-text '{cfg.pretrain_text}': only {len(sents)} of its {len(lines)} sentences are "
                        f"mostly words of the caption vocabulary, fewer than one batch ({cfg.pretrain_batch_size}); "
                        "is it text in the captions' language?")
    if len(sents) < len(lines):
        report.warn(f"--pretrain-text: {len(lines) - len(sents)} of {len(lines)} sentences skipped (empty, or more "
                    "than a third of their words outside the caption vocabulary)")
    report.info(f"caption-train: pretraining the decoder on {len(sents)} sentences of {cfg.pretrain_text}")
    decoder.to(rt.device).train()
    opt = torch.optim.Adam(decoder.parameters(), lr=cfg.lr)
    B, mean = cfg.pretrain_batch_size, float("nan")
    g = torch.Generator().manual_seed(cfg.seed + 17)
    for epoch in range(cfg.pretrain_epochs):
        order = torch.randperm(len(sents), generator=g).tolist()
        total, n = 0.0, 0
        with report.progress(len(order) // B, f"text pretraining {epoch + 1}") as update:
            for k in range(len(order) // B):
                x, y = pad_batch([sents[i] for i in order[k * B : (k + 1) * B]])
                x, y = x.to(rt.device), y.to(rt.device)
                feats = null_input.to(rt.device).expand(len(x), *null_input.shape)
                with rt.autocast():
                    logits, _ = decoder(feats, x)
                loss, _ = caption_loss(logits, y, None)
                optimizer_step(loss, opt, rt.scaler, clip=cfg.clip)
                if k % 20 == 0:
                    lv = float(loss.detach())
                    check_finite(lv, k)
                    update(20 if k else 1, loss=lv)
                total, n = total + loss.detach(), n + 1
        mean = float(total) / max(n, 1)
        report.metrics("pretrain", epoch=epoch + 1, loss=mean)
    return {"loss": mean, "sentences": len(sents)}
