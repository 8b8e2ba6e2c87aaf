"""Caption text and batches: the tokenisation, a word vocabulary with a minimum count, padded batches,
image preprocessing, and a tiny synthetic dataset (coloured shapes) for tests.

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


# ---------------------------------------------------------------- images
def preprocess(img, size: int, mean, std) -> torch.Tensor:
    """A PIL RGB image -> normalised float (3, size, size): the whole image squashed (nothing cropped away)."""
    import numpy as np
    from PIL import Image

    img = img.convert("RGB").resize((size, size), Image.BICUBIC, reducing_gap=3.0)
    x = torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).permute(2, 0, 1).float().div_(255.0)
    return (x - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)


# ---------------------------------------------------------------- synthetic data for tests
COLOURS = {"red": (220, 30, 30), "green": (30, 180, 40), "blue": (30, 60, 220), "yellow": (230, 210, 30)}
SHAPES = ("circle", "square", "triangle")
SIDES = ("left", "right")


def shape_image(colour: str, shape: str, side: str, size: int = 32, seed: int = 0):
    """A PIL image: one coloured shape on a grey background, on the left or the right half."""
    import random

    from PIL import Image, ImageDraw

    rng = random.Random(seed)
    img = Image.new("RGB", (size, size), (128 + rng.randint(-20, 20),) * 3)
    d = ImageDraw.Draw(img)
    r = size // 5 + rng.randint(-1, 1)
    cx = (size // 4 if side == "left" else 3 * size // 4) + rng.randint(-1, 1)
    cy = size // 2 + rng.randint(-3, 3)
    box = (cx - r, cy - r, cx + r, cy + r)
    fill = COLOURS[colour]
    if shape == "circle":
        d.ellipse(box, fill=fill)
    elif shape == "square":
        d.rectangle(box, fill=fill)
    else:
        d.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=fill)
    return img


def shape_captions(colour: str, shape: str, side: str) -> list[str]:
    return [f"a {colour} {shape} on the {side} .", f"a {colour} {shape} on the {side} side .",
            f"there is a {colour} {shape} on the {side} ."]


def make_shapes_dataset(folder, n: int = 48, size: int = 32, seed: int = 0) -> "object":
    """Write ``n`` shape images and a ``captions.txt`` (CSV, the shared data's format) into ``folder``."""
    import csv
    import itertools
    import random
    from pathlib import Path

    folder = Path(folder)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    combos = list(itertools.product(COLOURS, SHAPES, SIDES))
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        colour, shape, side = combos[i % len(combos)] if i < len(combos) else rng.choice(combos)
        name = f"img{i:03d}.png"
        shape_image(colour, shape, side, size, seed * 1000 + i).save(folder / "images" / name)
        rows += [(name, c) for c in shape_captions(colour, shape, side)]
    with open(folder / "captions.txt", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image", "caption"])
        w.writerows(rows)
    return folder / "captions.txt"
