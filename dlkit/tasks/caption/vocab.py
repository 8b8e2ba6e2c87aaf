"""Caption text: the tokenisation, a word vocabulary with a minimum count, and teacher-forcing batches.

Tokenisation (used for training, BLEU and CIDEr-D alike): lower-case, words are ``\\w+('\\w+)?`` runs,
punctuation is dropped - close to coco-caption's PTB tokenizer followed by its punctuation removal.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

import torch

from dlkit.core.errors import DataError
from dlkit.text.tokens import BOS, EOS, PAD, SPECIALS, UNK

_WORD = re.compile(r"\w+(?:'\w+)?", re.UNICODE)


def tokenize(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def normalize(text: str) -> str:
    """The form captions are scored in: tokenised words joined by spaces."""
    return " ".join(tokenize(text))


@dataclass
class Vocab:
    words: list[str]  # index = id; the first NUM_SPECIAL are the special tokens

    def __post_init__(self):
        self.index = {w: i for i, w in enumerate(self.words)}

    def __len__(self) -> int:
        return len(self.words)

    @classmethod
    def build(cls, captions: list[str], min_count: int = 5, max_size: int | None = None) -> "Vocab":
        """Words seen at least ``min_count`` times, most frequent first (ties alphabetical)."""
        counts = Counter(w for c in captions for w in tokenize(c))
        kept = sorted((w for w, n in counts.items() if n >= min_count), key=lambda w: (-counts[w], w))
        if max_size:
            kept = kept[: max(0, max_size - len(SPECIALS))]
        if not kept:
            raise DataError(f"no word occurs {min_count} times in the training captions; lower --min-count")
        return cls(list(SPECIALS) + kept)

    def encode(self, text: str, max_len: int | None = None) -> list[int]:
        ids = [self.index.get(w, UNK) for w in tokenize(text)]
        return ids[:max_len] if max_len else ids

    def decode(self, ids) -> str:
        out = []
        for i in ids:
            i = int(i)
            if i == EOS:
                break
            if i in (PAD, BOS):
                continue
            out.append(self.words[i] if 0 <= i < len(self.words) else self.words[UNK])
        return " ".join(out)

    def to_meta(self) -> dict:
        return {"kind": "words", "words": self.words}

    @classmethod
    def from_meta(cls, meta: dict) -> "Vocab":
        return cls(list(meta["words"]))


def pad_batch(seqs: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Teacher-forcing pair: inputs ``BOS w1..wn`` and targets ``w1..wn EOS``, both (B, T) padded with PAD."""
    T = max(len(s) for s in seqs) + 1
    x = torch.full((len(seqs), T), PAD, dtype=torch.long)
    y = torch.full((len(seqs), T), PAD, dtype=torch.long)
    for i, s in enumerate(seqs):
        x[i, 0] = BOS
        x[i, 1 : len(s) + 1] = torch.tensor(s, dtype=torch.long)
        y[i, : len(s)] = torch.tensor(s, dtype=torch.long)
        y[i, len(s)] = EOS
    return x, y


def caption_pairs(captions: list[list[str]], vocab: Vocab, max_len: int) -> list[tuple[int, list[int]]]:
    """(image index, token ids) for every caption; empty captions are left out."""
    pairs = []
    for i, caps in enumerate(captions):
        for c in caps:
            ids = vocab.encode(c, max_len)
            if ids:
                pairs.append((i, ids))
    return pairs
